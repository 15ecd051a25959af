//! `cargo xtask bench ddpm`: the U-Net of google/ddpm-cifar10-32 (Ho et al.,
//! 2020) at batch 1 and a 50-step DDIM sample (Song et al., 2021) beside
//! diffusers' `UNet2DModel` and `DDIMScheduler`.

use super::{
    largest_difference, median, run_forward_reference, time_forward, TempDir, WARMUP_RUNS,
};
use anyhow::{ensure, Context, Result};
use diffusion::scheduler::{DdimScheduler, DdimStepOptions, SchedulerConfig};
use diffusion::{Config, UNet2DModel};
use std::path::Path;
use std::process::ExitCode;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Denoising steps of the DDIM sample.
const DDIM_STEPS: i64 = 50;
/// The timestep of the forward-pass input. A pass costs the same at every
/// timestep.
const FORWARD_TIMESTEP: i64 = 500;
/// Rust speed over diffusers speed that the benchmark aims for.
const TARGET: f64 = 1.0;
/// The largest difference between the two sides' U-Net outputs that still
/// counts as agreement. Both sides call the same libtorch kernels on the same
/// weights, and the outputs, up to about 3 in magnitude, differ by rounding.
// NOTE: measured with torch 2.13: the Rust and diffusers outputs differed by
// 1.3e-5 on 1 and on 2 threads, and diffusers' own outputs on 1 and 2 threads
// by 8e-6.
const FORWARD_TOLERANCE: f64 = 1e-4;
/// The largest difference between the two sides' final DDIM samples, in
/// [-1, 1], that still counts as agreement. Each step feeds the U-Net's
/// rounding differences back into its next input, so over 50 steps they grow
/// about a hundredfold. Errors in the sampler are far larger: with beta_end
/// 0.0201 in place of 0.02, diffusers' sample moves by 0.29.
// NOTE: measured with torch 2.13: the Rust and diffusers samples differed by
// 1.7e-3 on 1 thread and 1.5e-3 on 2 threads, and diffusers' own samples on 1
// and 2 threads by 1.2e-3. Other thread counts and CPUs round differently,
// hence the margin.
const SAMPLE_TOLERANCE: f64 = 1e-2;

/// The differences between the outputs of the two sides.
struct DdpmAgreement {
    /// The largest difference between the U-Net outputs.
    largest_forward_difference: f64,
    /// The largest difference between the final DDIM samples.
    largest_sample_difference: f64,
}

impl DdpmAgreement {
    /// Returns whether both differences are within their tolerances, and
    /// false where either is NaN.
    fn agrees(&self) -> bool {
        self.largest_forward_difference <= FORWARD_TOLERANCE
            && self.largest_sample_difference <= SAMPLE_TOLERANCE
    }
}

/// Compares the Rust `unet_output` and final `ddim_sample` with the
/// reference's outputs in the safetensors file `path`, under the same names.
fn compare_ddpm_outputs(
    unet_output: &Tensor,
    ddim_sample: &Tensor,
    path: &Path,
) -> Result<DdpmAgreement> {
    let reference = common::checkpoint::read(path)?;
    let mut largest = [0.0; 2];
    for (difference, (name, rust)) in largest
        .iter_mut()
        .zip([("unet_output", unet_output), ("ddim_sample", ddim_sample)])
    {
        let python = reference
            .get(name)
            .with_context(|| format!("{} has no tensor {name:?}", path.display()))?;
        ensure!(
            python.size() == rust.size(),
            "reference/bench_ddpm.py returned {name} of shape {:?}, expected {:?}",
            python.size(),
            rust.size()
        );
        *difference = largest_difference(rust, python)?;
    }
    Ok(DdpmAgreement {
        largest_forward_difference: largest[0],
        largest_sample_difference: largest[1],
    })
}

/// Runs the deterministic DDIM sampler (eta 0) from `noise`: one U-Net pass
/// and one scheduler step per timestep of `scheduler`, on which
/// `set_timesteps` has run.
fn ddim_sample(
    unet: &UNet2DModel,
    scheduler: &DdimScheduler,
    noise: &Tensor,
) -> common::Result<Tensor> {
    let options = DdimStepOptions {
        eta: 0.0,
        use_clipped_model_output: false,
    };
    let mut sample = noise.shallow_clone();
    for &t in scheduler.timesteps() {
        let output = unet.forward(&sample, &Tensor::from(t), false)?;
        sample = scheduler
            .step(&output, t, &sample, options, None)?
            .prev_sample;
    }
    Ok(sample)
}

/// Writes `config` as the `scheduler_config.json` of diffusers'
/// `DDIMScheduler` into `dir`.
fn save_ddim_config(config: &SchedulerConfig, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut json = serde_json::to_value(config)?;
    let map = json
        .as_object_mut()
        .context("the scheduler configuration is not a JSON object")?;
    // DDIMScheduler has no variance_type, and diffusers warns about
    // unexpected keys.
    map.remove("variance_type");
    map.insert("_class_name".into(), "DDIMScheduler".into());
    let path = dir.join(diffusion::pipeline::SCHEDULER_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Maximum `--rounds` of `bench ddpm`.
const MAX_ROUNDS: usize = 20;

/// The medians of one round, in milliseconds.
struct RoundTimings {
    rust_forward_ms: f64,
    rust_sample_ms: f64,
    py_forward_ms: f64,
    py_sample_ms: f64,
}

pub fn bench_ddpm(
    threads: Option<i32>,
    runs: usize,
    rounds: usize,
    json: bool,
) -> Result<ExitCode> {
    ensure!(runs > 0, "--runs {runs} is invalid: use 1 or more");
    ensure!(
        (1..=MAX_ROUNDS).contains(&rounds),
        "--rounds {rounds} is invalid: use 1 to {MAX_ROUNDS}"
    );
    let threads = crate::resolve_threads(threads)?;
    tch::set_num_threads(threads);
    let config = Config::ddpm_cifar10_32();
    let (height, width) = config
        .sample_size
        .map(|size| size.height_width())
        .context("the ddpm-cifar10-32 configuration has no sample_size")?;
    let dir = TempDir::new("bench-ddpm")?;

    // Random weights, because `scripts/setup.sh` installs no DDPM checkpoint.
    // The reference loads the same weights, scheduler and inputs from `dir`,
    // laid out as a diffusers pipeline directory.
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let unet = UNet2DModel::new(&vs.root(), &config)?;
    diffusion::save_unet(&vs, "", &config, &dir.0.join("unet"))?;
    let parameters: i64 = vs
        .trainable_variables()
        .iter()
        .map(Tensor::numel)
        .sum::<usize>() as i64;
    let scheduler_config = SchedulerConfig::default();
    save_ddim_config(&scheduler_config, &dir.0.join("scheduler"))?;
    let mut scheduler = DdimScheduler::new(scheduler_config)?;
    scheduler.set_timesteps(DDIM_STEPS)?;

    let shape = [1, config.in_channels, height, width];
    let sample = Tensor::f_randn(shape, (Kind::Float, Device::Cpu))?;
    let timesteps = Tensor::from_slice(&[FORWARD_TIMESTEP]);
    let noise = Tensor::f_randn(shape, (Kind::Float, Device::Cpu))?;
    let inputs_file = dir.0.join("inputs.safetensors");
    Tensor::write_safetensors(
        &[
            ("sample", &sample),
            ("timesteps", &timesteps),
            ("noise", &noise),
        ],
        &inputs_file,
    )?;

    // Each round times the Rust passes, then the reference's, so that a
    // slow period of the machine falls on both sides over the rounds.
    let mut timings = Vec::with_capacity(rounds);
    let mut last = None;
    for _ in 0..rounds {
        let (rust_forward_ms, unet_output) =
            tch::no_grad(|| time_forward(|| unet.forward(&sample, &timesteps, false), runs))?;
        let (rust_sample_ms, final_sample) =
            tch::no_grad(|| time_forward(|| ddim_sample(&unet, &scheduler, &noise), runs))?;
        let (reference, outputs_file) = run_forward_reference(
            "bench_ddpm.py",
            threads,
            &dir,
            &inputs_file,
            runs,
            &["--steps".into(), DDIM_STEPS.to_string()],
        )?;
        for (key, expected) in [("steps", DDIM_STEPS), ("parameters", parameters)] {
            ensure!(
                reference[key].as_i64() == Some(expected),
                "reference/bench_ddpm.py reported {key} {}, expected {expected}",
                reference[key]
            );
        }
        let number = |key: &str| reference[key].as_f64().unwrap_or(f64::NAN);
        timings.push(RoundTimings {
            rust_forward_ms,
            rust_sample_ms,
            py_forward_ms: number("forward_ms"),
            py_sample_ms: number("sample_ms"),
        });
        last = Some((unet_output, final_sample, reference, outputs_file));
    }
    drop((unet, vs));
    let (unet_output, final_sample, reference, outputs_file) =
        last.context("internal error: no benchmark round ran")?;
    let agreement = compare_ddpm_outputs(&unet_output, &final_sample, &outputs_file)?;
    ensure!(
        agreement.agrees(),
        "the Rust and diffusers outputs differ: largest U-Net output difference {:.2e} \
         (tolerance {FORWARD_TOLERANCE:e}), largest DDIM sample difference {:.2e} \
         (tolerance {SAMPLE_TOLERANCE:e})",
        agreement.largest_forward_difference,
        agreement.largest_sample_difference
    );

    let median_of = |field: fn(&RoundTimings) -> f64| median(timings.iter().map(field).collect());
    let rust_forward_ms = median_of(|t| t.rust_forward_ms);
    let rust_sample_ms = median_of(|t| t.rust_sample_ms);
    let py_forward_ms = median_of(|t| t.py_forward_ms);
    let py_sample_ms = median_of(|t| t.py_sample_ms);
    let forward_ratio = py_forward_ms / rust_forward_ms;
    let sample_ratio = py_sample_ms / rust_sample_ms;
    let target_met = forward_ratio >= TARGET && sample_ratio >= TARGET;

    if json {
        let record = serde_json::json!({
            "model": "google/ddpm-cifar10-32 U-Net, random weights", "parameters": parameters,
            "image_size": [height, width], "batch_size": 1, "ddim_steps": DDIM_STEPS, "eta": 0.0,
            "dtype": "f32", "device": "cpu", "threads": threads, "runs": runs,
            "rounds": rounds, "warmup_runs": WARMUP_RUNS,
            "round_timings_ms": timings.iter().map(|t| serde_json::json!({
                "rust_forward": t.rust_forward_ms, "rust_sample": t.rust_sample_ms,
                "reference_forward": t.py_forward_ms, "reference_sample": t.py_sample_ms,
            })).collect::<Vec<_>>(),
            "rust": {"forward_ms": rust_forward_ms, "sample_ms": rust_sample_ms},
            "reference": reference,
            "forward_ratio": forward_ratio, "sample_ratio": sample_ratio,
            "target": TARGET, "target_met": target_met,
            "forward_tolerance": FORWARD_TOLERANCE, "sample_tolerance": SAMPLE_TOLERANCE,
            "largest_forward_difference": agreement.largest_forward_difference,
            "largest_sample_difference": agreement.largest_sample_difference,
        });
        println!("{record}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "google/ddpm-cifar10-32 U-Net (random weights, {parameters} parameters), \
         {height} x {width}, batch 1, f32, CPU, {threads} threads; per round, the median \
         of {runs} runs after {WARMUP_RUNS} warm-up run; the median of {rounds} round(s)"
    );
    println!("| pass                         | Rust (ms) | diffusers (ms) | ratio |");
    println!("|------------------------------|-----------|----------------|-------|");
    let sample_pass = format!("DDIM sample, {DDIM_STEPS} steps, eta 0");
    for (pass, rust_ms, py_ms, ratio) in [
        (
            "U-Net forward",
            rust_forward_ms,
            py_forward_ms,
            forward_ratio,
        ),
        (&sample_pass, rust_sample_ms, py_sample_ms, sample_ratio),
    ] {
        println!("| {pass:<28} | {rust_ms:>9.1} | {py_ms:>14.1} | {ratio:>5.2} |");
    }
    let ratios = |rust: fn(&RoundTimings) -> f64, py: fn(&RoundTimings) -> f64| {
        let ratios: Vec<String> = timings
            .iter()
            .map(|t| format!("{:.2}", py(t) / rust(t)))
            .collect();
        ratios.join(", ")
    };
    println!(
        "ratio per round (Rust passes first, then diffusers): forward {}; DDIM {}",
        ratios(|t| t.rust_forward_ms, |t| t.py_forward_ms),
        ratios(|t| t.rust_sample_ms, |t| t.py_sample_ms)
    );
    println!(
        "ratio: Rust speed / diffusers speed; target: at least {TARGET:.1} for both passes, {}",
        if target_met { "met" } else { "not met" }
    );
    println!(
        "outputs agree: largest U-Net output difference {:.2e} (tolerance \
         {FORWARD_TOLERANCE:e}), largest DDIM sample difference {:.2e} (tolerance \
         {SAMPLE_TOLERANCE:e})",
        agreement.largest_forward_difference, agreement.largest_sample_difference
    );
    println!(
        "reference: {}",
        reference["implementation"].as_str().unwrap_or("?")
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write_outputs(dir: &Path, unet_output: &Tensor, ddim_sample: &Tensor) -> PathBuf {
        let path = dir.join("outputs.safetensors");
        let tensors = [("unet_output", unet_output), ("ddim_sample", ddim_sample)];
        Tensor::write_safetensors(&tensors, &path).unwrap();
        path
    }

    fn small_outputs() -> (Tensor, Tensor) {
        let unet_output = Tensor::arange(12, (Kind::Float, Device::Cpu)).reshape([1, 3, 2, 2]);
        let ddim_sample = unet_output.tanh();
        (unet_output, ddim_sample)
    }

    #[test]
    fn comparison_accepts_equal_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (unet_output, ddim_sample) = small_outputs();
        let path = write_outputs(dir.path(), &unet_output, &ddim_sample);
        let agreement = compare_ddpm_outputs(&unet_output, &ddim_sample, &path).unwrap();
        assert_eq!(agreement.largest_forward_difference, 0.0);
        assert_eq!(agreement.largest_sample_difference, 0.0);
        assert!(agreement.agrees());
    }

    #[test]
    fn comparison_rejects_distant_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (unet_output, ddim_sample) = small_outputs();

        let shifted = &unet_output + 10.0 * FORWARD_TOLERANCE;
        let path = write_outputs(dir.path(), &shifted, &ddim_sample);
        let agreement = compare_ddpm_outputs(&unet_output, &ddim_sample, &path).unwrap();
        let expected = 10.0 * FORWARD_TOLERANCE;
        assert!((agreement.largest_forward_difference - expected).abs() < 1e-5);
        assert!(!agreement.agrees());

        let shifted = &ddim_sample - 2.0 * SAMPLE_TOLERANCE;
        let path = write_outputs(dir.path(), &unet_output, &shifted);
        let agreement = compare_ddpm_outputs(&unet_output, &ddim_sample, &path).unwrap();
        let expected = 2.0 * SAMPLE_TOLERANCE;
        assert!((agreement.largest_sample_difference - expected).abs() < 1e-6);
        assert!(!agreement.agrees());

        let nan = ddim_sample.full_like(f64::NAN);
        let path = write_outputs(dir.path(), &unet_output, &nan);
        let agreement = compare_ddpm_outputs(&unet_output, &ddim_sample, &path).unwrap();
        assert!(!agreement.agrees());
    }

    #[test]
    fn comparison_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let (unet_output, ddim_sample) = small_outputs();
        let path = dir.path().join("outputs.safetensors");
        Tensor::write_safetensors(&[("unet_output", &unet_output)], &path).unwrap();
        let err = compare_ddpm_outputs(&unet_output, &ddim_sample, &path)
            .err()
            .expect("a missing tensor is an error")
            .to_string();
        assert!(err.contains("has no tensor \"ddim_sample\""), "{err}");

        let wide = Tensor::zeros([1, 3, 2, 3], (Kind::Float, Device::Cpu));
        let path = write_outputs(dir.path(), &wide, &ddim_sample);
        let err = compare_ddpm_outputs(&unet_output, &ddim_sample, &path)
            .err()
            .expect("a shape mismatch is an error")
            .to_string();
        assert!(
            err.contains("returned unet_output of shape [1, 3, 2, 3]"),
            "{err}"
        );
    }

    #[test]
    fn scheduler_config_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = SchedulerConfig::default();
        save_ddim_config(&config, dir.path()).unwrap();
        let path = dir.path().join(diffusion::pipeline::SCHEDULER_FILE);
        assert_eq!(SchedulerConfig::from_file(&path).unwrap(), config);
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["_class_name"], "DDIMScheduler");
        assert_eq!(json["beta_schedule"], "linear");
        assert!(json.get("variance_type").is_none(), "{json}");
    }

    /// With a U-Net that predicts zero noise, a DDIM step at eta 0 maps x_t
    /// to sqrt(abar_prev) clamp(x_t / sqrt(abar_t), -1, 1). The loop then
    /// returns the noise divided by sqrt(abar) of the first timestep and
    /// clamped, and only if it runs every timestep down to 0.
    #[test]
    fn ddim_loop_with_zero_noise_prediction() {
        let vs = VarStore::new(Device::Cpu);
        let unet = UNet2DModel::new(&vs.root(), &Config::mnist()).unwrap();
        tch::no_grad(|| {
            for (name, mut variable) in vs.variables() {
                if name.starts_with("conv_out.") {
                    let _ = variable.zero_();
                }
            }
        });
        let mut scheduler = DdimScheduler::new(SchedulerConfig::default()).unwrap();
        scheduler.set_timesteps(5).unwrap();
        assert_eq!(scheduler.timesteps(), [800, 600, 400, 200, 0]);
        let abar = f64::from(scheduler.schedule().alphas_cumprod()[800]);

        // Half of the values lie within [-1, 1] after the division.
        let bound = 2.0 * abar.sqrt();
        let noise = Tensor::linspace(-bound, bound, 1024, (Kind::Float, Device::Cpu))
            .reshape([1, 1, 32, 32]);
        let sample = tch::no_grad(|| ddim_sample(&unet, &scheduler, &noise)).unwrap();
        let expected = (&noise / abar.sqrt()).clamp(-1.0, 1.0);
        let difference = largest_difference(&sample, &expected).unwrap();
        assert!(difference < 1e-5, "difference {difference:e}");
    }
}
