//! Sampling through a pipeline directory: the layout diffusers writes,
//! seeded samples, classifier-free guidance, and the errors for step counts
//! the schedule cannot give.

use diffusion::pipeline::{Guidance, Pipeline, SamplerKind};
use diffusion::scheduler::SchedulerConfig;
use std::path::{Path, PathBuf};
use tch::Device;

fn unet_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_ddpm")
}

/// Writes a pipeline directory with the tiny U-Net of the parity fixtures.
fn pipeline_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let unet = dir.path().join("unet");
    std::fs::create_dir_all(&unet).unwrap();
    for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(unet_fixture().join(name), unet.join(name)).unwrap();
    }
    let scheduler = SchedulerConfig {
        num_train_timesteps: 100,
        ..SchedulerConfig::default()
    };
    Pipeline::save_scheduler(dir.path(), &scheduler).unwrap();
    dir
}

#[test]
fn saved_pipeline_has_diffusers_layout() {
    let dir = pipeline_dir();
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("model_index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(index["_class_name"], "DDPMPipeline");
    assert_eq!(
        index["unet"],
        serde_json::json!(["diffusers", "UNet2DModel"])
    );
    let path = dir.path().join("scheduler/scheduler_config.json");
    let scheduler: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(scheduler["_class_name"], "DDPMScheduler");
    assert_eq!(scheduler["num_train_timesteps"], 100);
    assert_eq!(scheduler["beta_schedule"], "linear");
    let pipeline = Pipeline::load(dir.path(), Device::Cpu).unwrap();
    assert_eq!(pipeline.scheduler.num_train_timesteps, 100);
}

#[test]
fn samples_are_seeded_images() {
    let dir = pipeline_dir();
    let pipeline = Pipeline::load(dir.path(), Device::Cpu).unwrap();
    for sampler in [SamplerKind::Ddim, SamplerKind::Ddpm] {
        let a = pipeline.sample(sampler, 4, 0.0, 2, 7).unwrap();
        assert_eq!(a.size(), [2, 3, 16, 16]);
        assert!(a.min().double_value(&[]) >= 0.0);
        assert!(a.max().double_value(&[]) <= 1.0);
        let b = pipeline.sample(sampler, 4, 0.0, 2, 7).unwrap();
        assert!(a.equal(&b), "{sampler:?}: same seed, other samples");
        let c = pipeline.sample(sampler, 4, 0.0, 2, 8).unwrap();
        assert!(!a.equal(&c), "{sampler:?}: other seed, same samples");
    }
    // DDIM with eta 1 draws noise at every step, so it differs from eta 0.
    let deterministic = pipeline.sample(SamplerKind::Ddim, 4, 0.0, 1, 3).unwrap();
    let stochastic = pipeline.sample(SamplerKind::Ddim, 4, 1.0, 1, 3).unwrap();
    assert!(!deterministic.equal(&stochastic));
}

#[test]
fn bad_sampling_requests_are_rejected() {
    let dir = pipeline_dir();
    let pipeline = Pipeline::load(dir.path(), Device::Cpu).unwrap();
    for sampler in [SamplerKind::Ddim, SamplerKind::Ddpm] {
        for steps in [0, -3, 101] {
            let error = pipeline.sample(sampler, steps, 0.0, 1, 0).unwrap_err();
            assert!(
                error.to_string().contains(&steps.to_string()),
                "{sampler:?} {steps}: {error}"
            );
        }
    }
    let error = pipeline
        .sample(SamplerKind::Ddim, 4, 0.0, 0, 0)
        .unwrap_err();
    assert!(error.to_string().contains("0 samples"), "{error}");
}

#[test]
fn bare_unet_directory_samples_with_ddpm_defaults() {
    let pipeline = Pipeline::load(&unet_fixture(), Device::Cpu).unwrap();
    assert_eq!(pipeline.scheduler, SchedulerConfig::default());
    let images = pipeline.sample(SamplerKind::Ddim, 2, 0.0, 1, 0).unwrap();
    assert_eq!(images.size(), [1, 3, 16, 16]);
}

/// Writes a pipeline directory with a small randomly initialised U-Net of
/// ten class embeddings (labels 0 to 8, and 9 as the null label), and
/// loads it.
fn conditional_pipeline() -> (tempfile::TempDir, Pipeline) {
    let config = diffusion::Config {
        sample_size: Some(diffusion::SampleSize::Square(8)),
        in_channels: 1,
        out_channels: 1,
        block_out_channels: vec![8, 16],
        down_block_types: vec![
            diffusion::DownBlockType::DownBlock2D,
            diffusion::DownBlockType::AttnDownBlock2D,
        ],
        up_block_types: vec![
            diffusion::UpBlockType::AttnUpBlock2D,
            diffusion::UpBlockType::UpBlock2D,
        ],
        layers_per_block: 1,
        norm_num_groups: 4,
        num_class_embeds: Some(10),
        ..diffusion::Config::default()
    };
    tch::manual_seed(3);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    diffusion::UNet2DModel::new(&vs.root(), &config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    diffusion::save_unet(&vs, "", &config, &dir.path().join("unet")).unwrap();
    let scheduler = SchedulerConfig {
        num_train_timesteps: 100,
        ..SchedulerConfig::default()
    };
    Pipeline::save_scheduler(dir.path(), &scheduler).unwrap();
    let pipeline = Pipeline::load(dir.path(), Device::Cpu).unwrap();
    (dir, pipeline)
}

fn guided(pipeline: &Pipeline, labels: &[i64], scale: f64) -> tch::Tensor {
    let guidance = Guidance {
        labels: labels.to_vec(),
        scale,
    };
    pipeline
        .sample_guided(SamplerKind::Ddim, 3, 0.0, &guidance, 11)
        .unwrap()
}

fn max_difference(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn guidance_scale_zero_ignores_the_labels() {
    let (_dir, pipeline) = conditional_pipeline();
    let a = guided(&pipeline, &[0, 1], 0.0);
    let b = guided(&pipeline, &[5, 8], 0.0);
    assert_eq!(a.size()[0], 2);
    assert!(max_difference(&a, &b) < 1e-6);
}

#[test]
fn guided_samples_follow_labels_and_scale() {
    let (_dir, pipeline) = conditional_pipeline();
    let conditional = guided(&pipeline, &[0, 1], 1.0);
    assert!(max_difference(&conditional, &guided(&pipeline, &[0, 1], 1.0)) == 0.0);
    assert!(max_difference(&conditional, &guided(&pipeline, &[5, 8], 1.0)) > 1e-4);
    assert!(max_difference(&conditional, &guided(&pipeline, &[0, 1], 3.0)) > 1e-4);
    // Each sample depends on its own label only.
    let mixed = guided(&pipeline, &[0, 8], 3.0);
    let first = guided(&pipeline, &[0, 1], 3.0);
    assert!(max_difference(&mixed.get(0), &first.get(0)) < 1e-5);
    assert!(max_difference(&mixed.get(1), &first.get(1)) > 1e-4);
}

#[test]
fn bad_guidance_is_rejected() {
    let (_dir, pipeline) = conditional_pipeline();
    let error = pipeline
        .sample(SamplerKind::Ddim, 3, 0.0, 1, 0)
        .unwrap_err();
    assert!(error.to_string().contains("class-conditional"), "{error}");
    for (labels, scale, expected) in [
        (vec![9], 2.0, "class label 9"),
        (vec![-1], 2.0, "class label -1"),
        (vec![0], -1.0, "guidance scale -1"),
        (vec![0], f64::NAN, "guidance scale NaN"),
        (vec![], 2.0, "0 samples"),
    ] {
        let guidance = Guidance { labels, scale };
        let error = pipeline
            .sample_guided(SamplerKind::Ddpm, 3, 0.0, &guidance, 0)
            .unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
    let dir = pipeline_dir();
    let unconditional = Pipeline::load(dir.path(), Device::Cpu).unwrap();
    let guidance = Guidance {
        labels: vec![0],
        scale: 2.0,
    };
    let error = unconditional
        .sample_guided(SamplerKind::Ddim, 3, 0.0, &guidance, 0)
        .unwrap_err();
    assert!(error.to_string().contains("num_class_embeds"), "{error}");
}
