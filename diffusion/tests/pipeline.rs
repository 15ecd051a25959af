//! Sampling through a pipeline directory: the layout diffusers writes,
//! seeded samples, and the errors for step counts the schedule cannot give.

use diffusion::pipeline::{Pipeline, SamplerKind};
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
