//! Training on real MNIST digits: the epsilon-prediction loss falls, and a
//! resumed run, moving average included, ends where an uninterrupted one
//! does.

use common::train::{train, Task, TrainOptions};
use diffusion::scheduler::SchedulerConfig;
use diffusion::train::{DdpmSettings, DdpmTask, ImageSet};
use diffusion::{Config, DownBlockType, UpBlockType};
use std::path::Path;
use std::sync::Mutex;
use tch::nn::VarStore;
use tch::{Device, Tensor};

/// A U-Net small enough for a few dozen steps in a test.
fn small_config() -> Config {
    Config {
        sample_size: Some(diffusion::SampleSize::Square(32)),
        in_channels: 1,
        out_channels: 1,
        block_out_channels: vec![16, 32],
        down_block_types: vec![DownBlockType::DownBlock2D, DownBlockType::AttnDownBlock2D],
        up_block_types: vec![UpBlockType::AttnUpBlock2D, UpBlockType::UpBlock2D],
        layers_per_block: 1,
        attention_head_dim: None,
        norm_num_groups: 8,
        ..Config::default()
    }
}

fn settings() -> DdpmSettings {
    DdpmSettings {
        batch_size: 32,
        ema_decay: 0.9,
        snr_gamma: None,
        label_dropout: 0.1,
        seed: 5,
    }
}

fn task(vs: &VarStore, data: (ImageSet, ImageSet)) -> DdpmTask {
    DdpmTask::new(
        vs,
        &small_config(),
        SchedulerConfig::default(),
        data,
        settings(),
    )
    .unwrap()
}

/// Serialises the training tests: libtorch's random generator is global,
/// so a run beside another would draw other noise.
static TRAINING: Mutex<()> = Mutex::new(());

fn data() -> (ImageSet, ImageSet) {
    let (train, eval) = diffusion::train::mnist().unwrap();
    (train.head(2000), eval.head(128))
}

fn options(steps: u64) -> TrainOptions {
    TrainOptions {
        steps,
        learning_rate: 2e-3,
        min_learning_rate: 2e-4,
        warmup_steps: 5,
        weight_decay: 0.0,
        eval_every: 20,
        checkpoint_every: 20,
        seed: 5,
        ..Default::default()
    }
}

#[test]
fn mnist_digits_are_scaled_and_padded() {
    let (train, eval) = diffusion::train::mnist().unwrap();
    let labels = train.labels.as_ref().unwrap();
    assert_eq!(labels.size(), [train.images.size()[0]]);
    assert_eq!(labels.max().int64_value(&[]), 9);
    let (train, eval) = (train.images, eval.images);
    assert_eq!(train.size()[1..], [1, 32, 32]);
    assert_eq!(eval.size()[1..], [1, 32, 32]);
    assert_eq!(train.min().double_value(&[]), -1.0);
    assert_eq!(train.max().double_value(&[]), 1.0);
    // The two-pixel border is background.
    let border = train.narrow(2, 0, 2).max().double_value(&[]);
    assert_eq!(border, -1.0);
}

#[test]
fn epsilon_loss_falls_on_digits() {
    let _serial = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(0);
    let dir = tempfile::tempdir().unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let mut task = task(&vs, data());
    let report = train(&mut vs, &mut task, &options(60), dir.path(), false).unwrap();
    let losses: Vec<f64> = report.evaluations.iter().map(|e| e.eval_loss).collect();
    // A U-Net that predicts zeros scores 1, the variance of the noise.
    assert!(losses[0] < 0.6, "held-out losses {losses:?}");
    assert!(losses[2] < 0.8 * losses[0], "held-out losses {losses:?}");
    assert!(dir
        .path()
        .join("unet/diffusion_pytorch_model.safetensors")
        .is_file());
}

#[test]
fn min_snr_weighted_loss_falls_on_digits() {
    let _serial = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(0);
    let dir = tempfile::tempdir().unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let settings = DdpmSettings {
        snr_gamma: Some(5.0),
        ..settings()
    };
    let mut task = DdpmTask::new(
        &vs,
        &small_config(),
        SchedulerConfig::default(),
        data(),
        settings,
    )
    .unwrap();
    let report = train(&mut vs, &mut task, &options(60), dir.path(), false).unwrap();
    let losses: Vec<f64> = report.evaluations.iter().map(|e| e.eval_loss).collect();
    assert!(losses[2] < 0.8 * losses[0], "held-out losses {losses:?}");
}

#[test]
fn bad_min_snr_gamma_is_an_error() {
    for gamma in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let vs = VarStore::new(Device::Cpu);
        let settings = DdpmSettings {
            batch_size: 4,
            snr_gamma: Some(gamma),
            ..settings()
        };
        let error = DdpmTask::new(
            &vs,
            &small_config(),
            SchedulerConfig::default(),
            blank_images(4, None),
            settings,
        )
        .err()
        .expect("a gamma that is not positive must be rejected");
        assert!(error.to_string().contains("gamma"), "{error}");
    }
}

/// `n` blank training and held-out images, with `labels` for both.
fn blank_images(n: i64, labels: Option<&[i64]>) -> (ImageSet, ImageSet) {
    let set = || ImageSet {
        images: Tensor::zeros([n, 1, 32, 32], (tch::Kind::Float, Device::Cpu)),
        labels: labels.map(Tensor::from_slice),
    };
    (set(), set())
}

/// Returns the small U-Net config with eleven class embeddings: the ten
/// digits and the null label.
fn conditional_config() -> Config {
    Config {
        num_class_embeds: Some(11),
        ..small_config()
    }
}

#[test]
fn class_conditional_loss_falls_on_digits() {
    let _serial = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(0);
    let dir = tempfile::tempdir().unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let mut task = DdpmTask::new(
        &vs,
        &conditional_config(),
        SchedulerConfig::default(),
        data(),
        settings(),
    )
    .unwrap();
    let report = train(&mut vs, &mut task, &options(60), dir.path(), false).unwrap();
    let losses: Vec<f64> = report.evaluations.iter().map(|e| e.eval_loss).collect();
    assert!(losses[2] < 0.8 * losses[0], "held-out losses {losses:?}");
    let config = std::fs::read_to_string(dir.path().join("unet/config.json")).unwrap();
    assert!(config.contains("\"num_class_embeds\": 11"), "{config}");
}

#[test]
fn bad_labels_are_errors() {
    let cases: [(Option<&[i64]>, f64, &str); 5] = [
        (None, 0.1, "no labels"),
        (Some(&[0, 1, 10, 2]), 0.1, "label 10 is out of range"),
        (Some(&[0, -2, 1, 2]), 0.1, "label -2 is out of range"),
        (Some(&[0, 1, 2]), 0.1, "shape [3]"),
        (Some(&[0, 1, 2, 3]), 1.5, "label dropout 1.5"),
    ];
    for (labels, label_dropout, expected) in cases {
        let vs = VarStore::new(Device::Cpu);
        let settings = DdpmSettings {
            batch_size: 4,
            label_dropout,
            ..settings()
        };
        let error = DdpmTask::new(
            &vs,
            &conditional_config(),
            SchedulerConfig::default(),
            blank_images(4, labels),
            settings,
        )
        .err()
        .expect("bad labels must be rejected");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

/// A task that stops with an error at one step, as an interrupted run does.
struct Interrupted {
    inner: DdpmTask,
    fail_at: u64,
}

impl Task for Interrupted {
    fn train_loss(&mut self, step: u64) -> common::Result<Tensor> {
        if step == self.fail_at {
            return Err(common::Error::InvalidInput("interrupted".into()));
        }
        self.inner.train_loss(step)
    }
    fn after_step(&mut self, step: u64) -> common::Result<()> {
        self.inner.after_step(step)
    }
    fn eval_loss(&mut self) -> common::Result<f64> {
        self.inner.eval_loss()
    }
    fn items_per_step(&self) -> u64 {
        self.inner.items_per_step()
    }
    fn export(&self, vs: &VarStore, dir: &Path) -> common::Result<()> {
        self.inner.export(vs, dir)
    }
}

fn sorted_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    variables
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let _serial = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let whole = tempfile::tempdir().unwrap();
    tch::manual_seed(1);
    let mut vs = VarStore::new(Device::Cpu);
    let mut uninterrupted = task(&vs, data());
    train(
        &mut vs,
        &mut uninterrupted,
        &options(40),
        whole.path(),
        false,
    )
    .unwrap();

    let split = tempfile::tempdir().unwrap();
    tch::manual_seed(1);
    let mut vs2 = VarStore::new(Device::Cpu);
    let mut interrupted = Interrupted {
        inner: task(&vs2, data()),
        fail_at: 25,
    };
    let error = train(
        &mut vs2,
        &mut interrupted,
        &options(40),
        split.path(),
        false,
    )
    .unwrap_err();
    assert!(error.to_string().contains("interrupted"));

    tch::manual_seed(2);
    let mut vs3 = VarStore::new(Device::Cpu);
    let mut resumed = task(&vs3, data());
    let report = train(&mut vs3, &mut resumed, &options(40), split.path(), true).unwrap();
    assert_eq!(report.start_step, 20);

    let (a, b) = (sorted_variables(&vs), sorted_variables(&vs3));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|(name, _)| name.starts_with("ema.")));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name} differs by {diff}");
    }
}
