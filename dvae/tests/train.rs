//! A short training run on real digits: the held-out loss falls, the
//! reconstructions improve, and the exported directory loads back.

use common::train::{train, TrainOptions};
use dvae::train::{evaluate, DvaeTask, Settings};
use dvae::{Config, Dvae};
use tch::nn::VarStore;
use tch::{Device, Tensor};

#[test]
fn training_on_digits_lowers_held_out_loss() {
    tch::set_num_threads(1);
    let (images, eval) = dvae::train::mnist().unwrap();
    // Every fifth held-out digit: all ten classes, 200 images.
    let eval = eval.index_select(
        0,
        &Tensor::arange_start_step(0, 1000, 5, (tch::Kind::Int64, Device::Cpu)),
    );
    let config = Config {
        group_count: 3,
        n_hid: 8,
        n_blk_per_group: 1,
        input_channels: 1,
        output_channels: 1,
        vocab_size: 64,
        n_init: 16,
        image_size: 28,
    };
    tch::manual_seed(0);
    let mut vs = VarStore::new(Device::Cpu);
    let model = Dvae::new(&vs.root(), &config).unwrap();
    let before = evaluate(&model.encoder, &model.decoder, &eval, 100).unwrap();
    let settings = Settings {
        batch_size: 16,
        beta: 1.0,
        beta_warmup_steps: 10,
        temperature_steps: 60,
        straight_through: false,
        seed: 0,
    };
    let mut task = DvaeTask::new(model, images, eval.shallow_clone(), settings).unwrap();
    let options = TrainOptions {
        steps: 60,
        learning_rate: 3e-3,
        min_learning_rate: 3e-4,
        warmup_steps: 5,
        weight_decay: 0.0,
        eval_every: 30,
        checkpoint_every: 60,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let report = train(&mut vs, &mut task, &options, dir.path(), false).unwrap();
    let after = task.last_metrics().unwrap().clone();
    let first = before.reconstruction + before.kl;
    let last = report.evaluations.last().unwrap().eval_loss;
    assert!(last < first - 0.5, "held-out loss {first} -> {last}");
    assert!(
        after.psnr > before.psnr + 2.0,
        "PSNR {} -> {}",
        before.psnr,
        after.psnr
    );

    let encoder = dvae::load_encoder(dir.path(), Device::Cpu).unwrap();
    let decoder = dvae::load_decoder(dir.path(), Device::Cpu).unwrap();
    let loaded = evaluate(&encoder, &decoder, &eval, 100).unwrap();
    assert_eq!(loaded.codes_used, after.codes_used);
    assert!((loaded.reconstruction - after.reconstruction).abs() < 1e-6);
    assert!((loaded.psnr - after.psnr).abs() < 1e-4);
}
