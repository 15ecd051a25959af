//! Parity of the noise schedules and of the DDPM and DDIM schedulers with
//! diffusers 0.42.1, on the fixtures of `reference/ddpm_schedulers.py`, and
//! their handling of invalid input.
//!
//! Only `sampling_loops_match_diffusers` draws from torch's global random
//! generator: every other test passes its noise explicitly, so tests running
//! in parallel cannot shift that test's random stream.

use common::Error;
use diffusion::schedule::{BetaSchedule, NoiseSchedule, Prediction, MAX_TRAIN_TIMESTEPS};
use diffusion::scheduler::{
    DdimScheduler, DdimStepOptions, DdpmScheduler, Sampler, SchedulerConfig, TimestepSpacing,
    VarianceType,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The largest error allowed against diffusers: absolute on values of order
/// 1, relative on larger ones (see `max_error`).
const TOLERANCE: f64 = 1e-5;

#[derive(Deserialize)]
struct Document {
    shape: Vec<i64>,
    cases: Vec<Case>,
    chains: Vec<Chain>,
    schedules: Vec<ScheduleCase>,
    noising: Vec<NoisingCase>,
    timestep_lists: Vec<TimestepList>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    scheduler: String,
    config: serde_json::Value,
    num_inference_steps: Option<i64>,
    custom_timesteps: Option<Vec<i64>>,
    eta: f64,
    use_clipped_model_output: bool,
    timesteps: Vec<i64>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    timestep: i64,
    input: usize,
    prev_sample: String,
    pred_original_sample: String,
}

#[derive(Deserialize)]
struct Chain {
    name: String,
    scheduler: String,
    config: serde_json::Value,
    num_inference_steps: i64,
    eta: f64,
    seed: i64,
    samples: String,
    pred_original_sample: String,
}

#[derive(Deserialize)]
struct ScheduleCase {
    name: String,
    config: serde_json::Value,
    betas: String,
    alphas_cumprod: String,
}

#[derive(Deserialize)]
struct NoisingCase {
    schedule: String,
    config: serde_json::Value,
    timesteps: Vec<i64>,
    dtype: String,
    add_noise: String,
    velocity: String,
}

#[derive(Deserialize)]
struct TimestepList {
    config: serde_json::Value,
    num_inference_steps: i64,
    timesteps: Vec<i64>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn document() -> Document {
    let text = std::fs::read_to_string(fixtures().join("scheduler_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensors() -> BTreeMap<String, Tensor> {
    common::checkpoint::read(&fixtures().join("schedulers.safetensors")).unwrap()
}

fn config(value: &serde_json::Value) -> SchedulerConfig {
    SchedulerConfig::from_json(&value.to_string()).unwrap()
}

/// Returns the largest |actual - expected| / max(1, |expected|), or NaN if
/// either contains a NaN.
fn max_error(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.size(), expected.size());
    let actual = actual.to_kind(Kind::Double);
    let expected = expected.to_kind(Kind::Double);
    let error = (&actual - &expected).abs() / expected.abs().clamp_min(1.0);
    if error.isnan().any().int64_value(&[]) != 0 {
        return f64::NAN;
    }
    error.max().double_value(&[])
}

fn assert_close(actual: &Tensor, expected: &Tensor, context: &str) -> f64 {
    let error = max_error(actual, expected);
    assert!(
        error <= TOLERANCE,
        "{context}: error {error:e} above {TOLERANCE:e}"
    );
    error
}

/// Compares the steps of one scheduler kind with diffusers' outputs, and
/// returns the number of steps compared.
fn check_cases(kind: &str) -> usize {
    let document = document();
    let tensors = tensors();
    let mut worst = 0.0f64;
    let mut count = 0;
    for case in document.cases.iter().filter(|c| c.scheduler == kind) {
        let config = config(&case.config);
        let ddpm_variance = config.variance_type;
        let mut ddpm = None;
        let mut ddim = None;
        if kind == "ddpm" {
            let mut scheduler = DdpmScheduler::new(config).unwrap();
            if let Some(custom) = &case.custom_timesteps {
                scheduler.set_custom_timesteps(custom).unwrap();
            } else if let Some(n) = case.num_inference_steps {
                scheduler.set_timesteps(n).unwrap();
            }
            assert_eq!(scheduler.timesteps(), case.timesteps, "{}", case.name);
            ddpm = Some(scheduler);
        } else {
            let mut scheduler = DdimScheduler::new(config).unwrap();
            scheduler
                .set_timesteps(case.num_inference_steps.unwrap())
                .unwrap();
            assert_eq!(scheduler.timesteps(), case.timesteps, "{}", case.name);
            ddim = Some(scheduler);
        }
        for step in &case.steps {
            let k = step.input;
            let sample = &tensors[&format!("input.sample.{k}")];
            let noise = &tensors[&format!("input.noise.{k}")];
            let output_name = match (kind, ddpm_variance) {
                ("ddpm", VarianceType::Learned) => format!("input.model_output_learned.{k}"),
                ("ddpm", VarianceType::LearnedRange) => {
                    format!("input.model_output_learned_range.{k}")
                }
                _ => format!("input.model_output.{k}"),
            };
            let model_output = &tensors[&output_name];
            let out = match (&ddpm, &ddim) {
                (Some(scheduler), _) => scheduler
                    .step(model_output, step.timestep, sample, Some(noise))
                    .unwrap(),
                (_, Some(scheduler)) => {
                    let options = DdimStepOptions {
                        eta: case.eta,
                        use_clipped_model_output: case.use_clipped_model_output,
                    };
                    scheduler
                        .step(model_output, step.timestep, sample, options, Some(noise))
                        .unwrap()
                }
                _ => unreachable!(),
            };
            let context = format!("{} at t = {}", case.name, step.timestep);
            let prev = assert_close(
                &out.prev_sample,
                &tensors[&step.prev_sample],
                &format!("{context}: prev_sample"),
            );
            let original = assert_close(
                &out.pred_original_sample,
                &tensors[&step.pred_original_sample],
                &format!("{context}: pred_original_sample"),
            );
            worst = worst.max(prev).max(original);
            count += 1;
        }
    }
    eprintln!("{kind}: {count} steps, largest error {worst:e}");
    count
}

#[test]
fn ddpm_steps_match_diffusers() {
    assert!(check_cases("ddpm") > 200);
}

#[test]
fn ddim_steps_match_diffusers() {
    assert!(check_cases("ddim") > 150);
}

/// Whole sampling loops through [`Sampler`], with the noise drawn from
/// torch's global generator seeded like diffusers' generator.
#[test]
fn sampling_loops_match_diffusers() {
    let document = document();
    let tensors = tensors();
    let bias = &tensors["input.model_output.0"];
    for chain in &document.chains {
        let config = config(&chain.config);
        let mut sampler = match chain.scheduler.as_str() {
            "ddpm" => Sampler::Ddpm(DdpmScheduler::new(config).unwrap()),
            _ => Sampler::Ddim {
                scheduler: DdimScheduler::new(config).unwrap(),
                options: DdimStepOptions {
                    eta: chain.eta,
                    use_clipped_model_output: false,
                },
            },
        };
        sampler.set_timesteps(chain.num_inference_steps).unwrap();
        assert_eq!(sampler.init_noise_sigma(), 1.0);
        let expected = &tensors[&chain.samples];
        assert_eq!(expected.size()[0], sampler.timesteps().len() as i64);

        tch::manual_seed(chain.seed);
        let mut sample = Tensor::randn(&document.shape, (Kind::Float, tch::Device::Cpu));
        let mut worst = 0.0f64;
        let mut last_original = None;
        for (i, &t) in sampler.timesteps().iter().enumerate() {
            // The stand-in denoiser of the fixture script.
            let model_output = &sample * 0.7 + bias * 0.3;
            let out = sampler.step(&model_output, t, &sample, None).unwrap();
            let context = format!("{} at step {i} (t = {t})", chain.name);
            worst = worst.max(assert_close(
                &out.prev_sample,
                &expected.get(i as i64),
                &context,
            ));
            sample = out.prev_sample;
            last_original = Some(out.pred_original_sample);
        }
        assert_close(
            &last_original.unwrap(),
            &tensors[&chain.pred_original_sample],
            &format!("{}: last pred_original_sample", chain.name),
        );
        eprintln!("{}: largest error {worst:e}", chain.name);
    }
}

#[test]
fn schedules_match_diffusers() {
    let document = document();
    let tensors = tensors();
    for case in &document.schedules {
        let config = config(&case.config);
        let schedule = config.noise_schedule().unwrap();
        let betas = Tensor::from_slice(schedule.betas());
        let abar = Tensor::from_slice(schedule.alphas_cumprod());
        let expected_betas = &tensors[&case.betas];
        let expected_abar = &tensors[&case.alphas_cumprod];
        assert_eq!(schedule.len(), config.num_train_timesteps, "{}", case.name);
        // torch's float32 linspace differs from the rounded float64 one by up
        // to 3 ulp (about 2e-7 relative), and the cumulative product carries
        // that along: about 3e-7 after 1000 steps and 1.3e-6 after 4000.
        // Rescaling to zero terminal SNR subtracts nearly equal square roots
        // and divides nearly equal products, which turns those ulps into
        // absolute differences of up to 8e-6 in the betas and 2e-7 in
        // alphas_cumprod. `zero_snr_rescaling_matches_diffusers` checks the
        // rescaling alone more tightly.
        let (beta_absolute, abar_absolute) = if config.rescale_betas_zero_snr {
            (2e-5, 5e-7)
        } else {
            (0.0, 0.0)
        };
        let beta_excess = excess_error(&betas, expected_betas, 1e-6, beta_absolute);
        let abar_excess = excess_error(&abar, expected_abar, 2e-6, abar_absolute);
        assert!(
            beta_excess <= 0.0,
            "{}: betas off by {beta_excess:e} beyond the tolerance",
            case.name
        );
        assert!(
            abar_excess <= 0.0,
            "{}: alphas_cumprod off by {abar_excess:e} beyond the tolerance",
            case.name
        );
        let alphas: Vec<f32> = schedule.betas().iter().map(|b| 1.0 - b).collect();
        assert_eq!(schedule.alphas(), alphas.as_slice(), "{}", case.name);
        if config.beta_schedule == BetaSchedule::SquaredcosCapV2 {
            // Computed in float64 as diffusers does, so bit-identical.
            assert!(
                betas.equal(expected_betas),
                "{}: cosine betas differ",
                case.name
            );
            assert!(
                abar.equal(expected_abar),
                "{}: cosine alphas_cumprod differ",
                case.name
            );
        }
        if config.rescale_betas_zero_snr {
            assert_eq!(*schedule.betas().last().unwrap(), 1.0, "{}", case.name);
            assert_eq!(
                *schedule.alphas_cumprod().last().unwrap(),
                0.0,
                "{}",
                case.name
            );
        }
    }
}

/// Returns the largest amount by which |actual - expected| exceeds
/// relative * |expected| + absolute, which is at most 0 when every element is
/// within the tolerance.
fn excess_error(actual: &Tensor, expected: &Tensor, relative: f64, absolute: f64) -> f64 {
    assert_eq!(actual.size(), expected.size());
    let actual = actual.to_kind(Kind::Double);
    let expected = expected.to_kind(Kind::Double);
    let allowed = expected.abs() * relative + absolute;
    ((&actual - &expected).abs() - allowed)
        .max()
        .double_value(&[])
}

#[test]
fn zero_snr_rescaling_matches_diffusers() {
    // Rescaling diffusers' own betas isolates the rescaling from the
    // linspace. torch's float32 sqrt is not always correctly rounded (6 of
    // 1000 values differ by an ulp here), which moves a few betas by up to
    // 3e-7 and alphas_cumprod by up to 2e-7.
    let tensors = tensors();
    for name in ["linear", "scaled_linear"] {
        let betas = tensors[&format!("schedule.{name}.betas")].to_kind(Kind::Double);
        let betas = Vec::<f64>::try_from(betas).unwrap();
        let rescaled = NoiseSchedule::from_betas(&betas)
            .unwrap()
            .rescale_zero_terminal_snr()
            .unwrap();
        let expected_betas = &tensors[&format!("schedule.{name}_zero_snr.betas")];
        let expected_abar = &tensors[&format!("schedule.{name}_zero_snr.alphas_cumprod")];
        let betas = Tensor::from_slice(rescaled.betas());
        let abar = Tensor::from_slice(rescaled.alphas_cumprod());
        let beta_excess = excess_error(&betas, expected_betas, 0.0, 1e-6);
        let abar_excess = excess_error(&abar, expected_abar, 0.0, 3e-7);
        assert!(
            beta_excess <= 0.0,
            "{name}: betas off by {beta_excess:e} beyond 1e-6"
        );
        assert!(
            abar_excess <= 0.0,
            "{name}: alphas_cumprod off by {abar_excess:e} beyond 3e-7"
        );
        assert_eq!(*rescaled.betas().last().unwrap(), 1.0, "{name}");
        assert_eq!(*rescaled.alphas_cumprod().last().unwrap(), 0.0, "{name}");
        assert_eq!(
            rescaled.alphas_cumprod()[0],
            first_alpha_cumprod(&tensors, name),
            "{name}"
        );
    }
}

/// abar_0 of a schedule in the fixture, which rescaling keeps.
fn first_alpha_cumprod(tensors: &BTreeMap<String, Tensor>, name: &str) -> f32 {
    tensors[&format!("schedule.{name}.alphas_cumprod")].double_value(&[0]) as f32
}

#[test]
fn cosine_schedule_uses_float_division() {
    // With t / T in integer arithmetic, t1 = t2 = 0 for every step but the
    // last, so every beta but the last would be 0.
    let schedule = NoiseSchedule::new(BetaSchedule::SquaredcosCapV2, 1000, 0.0, 0.0).unwrap();
    let betas = schedule.betas();
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };

    let first = 1.0 - alpha_bar(0.001) / alpha_bar(0.0);
    assert!(
        (f64::from(betas[0]) - first).abs() < 1e-10,
        "first beta {}",
        betas[0]
    );
    assert!(betas[0] > 4e-5, "first beta {}", betas[0]);
    assert!(betas[0] < 5e-5, "first beta {}", betas[0]);
    assert!(
        (betas[499] - 0.00315).abs() < 1e-5,
        "middle beta {}",
        betas[499]
    );
    assert!(
        betas.windows(2).all(|w| w[1] >= w[0]),
        "betas must not decrease"
    );

    // Only the last beta reaches the cap, where abar(1) = 0 would give 1.
    assert_eq!(betas[999], 0.999);
    assert!(betas[998] < 0.8, "second to last beta {}", betas[998]);
    assert!(schedule.alphas_cumprod()[998] > 1e-6);
    assert!(schedule.alphas_cumprod()[999] < 1e-8);
}

#[test]
fn noising_matches_diffusers() {
    let document = document();
    let tensors = tensors();
    let original = &tensors["input.sample.0"];
    let noise = &tensors["input.noise.0"];
    for case in &document.noising {
        let schedule = config(&case.config).noise_schedule().unwrap();
        let kind = match case.dtype.as_str() {
            "float32" => Kind::Float,
            "float64" => Kind::Double,
            other => panic!("unexpected dtype {other}"),
        };
        let x0 = original.to_kind(kind);
        let eps = noise.to_kind(kind);
        let context = format!("{} {:?} {}", case.schedule, case.timesteps, case.dtype);
        // Int32 timesteps take the same path as Int64 ones.
        for timestep_kind in [Kind::Int64, Kind::Int] {
            let timesteps = Tensor::from_slice(&case.timesteps).to_kind(timestep_kind);
            let noisy = schedule.add_noise(&x0, &eps, &timesteps).unwrap();
            let velocity = schedule.velocity(&x0, &eps, &timesteps).unwrap();
            assert_eq!(noisy.kind(), kind);
            assert_close(
                &noisy,
                &tensors[&case.add_noise],
                &format!("add_noise {context}"),
            );
            assert_close(
                &velocity,
                &tensors[&case.velocity],
                &format!("velocity {context}"),
            );
            let target = schedule
                .target(Prediction::VPrediction, &x0, &eps, &timesteps)
                .unwrap();
            assert!(target.equal(&velocity));
        }
        let timesteps = Tensor::from_slice(&case.timesteps);
        let target = schedule
            .target(Prediction::Epsilon, &x0, &eps, &timesteps)
            .unwrap();
        assert!(target.equal(&eps));
        let target = schedule
            .target(Prediction::Sample, &x0, &eps, &timesteps)
            .unwrap();
        assert!(target.equal(&x0));
    }
}

#[test]
fn noising_matches_its_definition() {
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
    let original = Tensor::from_slice(&[1.0f64, -2.0, 0.5, 3.0]).reshape([2, 2]);
    let noise = Tensor::from_slice(&[0.25f64, 1.0, -1.0, 2.0]).reshape([2, 2]);
    let timesteps = Tensor::from_slice(&[10i64, 900]);
    let noisy = schedule.add_noise(&original, &noise, &timesteps).unwrap();
    let velocity = schedule.velocity(&original, &noise, &timesteps).unwrap();
    for (row, t) in [(0i64, 10usize), (1, 900)] {
        let abar = f64::from(schedule.alphas_cumprod()[t]);
        for col in 0..2 {
            let x0 = original.double_value(&[row, col]);
            let eps = noise.double_value(&[row, col]);
            let expected = abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps;
            assert!((noisy.double_value(&[row, col]) - expected).abs() < 1e-12);
            let expected = abar.sqrt() * eps - (1.0 - abar).sqrt() * x0;
            assert!((velocity.double_value(&[row, col]) - expected).abs() < 1e-12);
        }
    }
    // x0 = sqrt(abar) x_t - sqrt(1 - abar) v recovers the original.
    let abar = Tensor::from_slice(&[
        f64::from(schedule.alphas_cumprod()[10]),
        f64::from(schedule.alphas_cumprod()[900]),
    ])
    .reshape([2, 1]);
    let sqrt_one_minus_abar = abar.ones_like().g_sub(&abar).sqrt();
    let recovered = &noisy * abar.sqrt() - &velocity * sqrt_one_minus_abar;
    assert!(max_error(&recovered, &original) < 1e-12);
}

#[test]
fn timestep_lists_match_diffusers() {
    let document = document();
    let mut checked = 0;
    for list in &document.timestep_lists {
        let config = config(&list.config);
        let total = config.num_train_timesteps;
        let n = list.num_inference_steps;
        let context = format!(
            "{} spacing, T = {total}, n = {n}, steps_offset {}",
            config.timestep_spacing, config.steps_offset
        );
        let mut ddpm = DdpmScheduler::new(config.clone()).unwrap();
        let mut ddim = DdimScheduler::new(config.clone()).unwrap();
        if list.timesteps.iter().any(|&t| t >= total) {
            // diffusers accepts these and fails later, at the step.
            assert!(
                matches!(ddpm.set_timesteps(n), Err(Error::InvalidInput(_))),
                "{context}"
            );
            assert!(
                matches!(ddim.set_timesteps(n), Err(Error::InvalidInput(_))),
                "{context}"
            );
            continue;
        }
        let mut expected = list.timesteps.clone();
        if expected.len() as i64 == n + 1 {
            // diffusers' trailing spacing appends -1 for some n.
            assert_eq!(
                config.timestep_spacing,
                TimestepSpacing::Trailing,
                "{context}"
            );
            assert_eq!(expected.pop(), Some(-1), "{context}");
        }
        ddpm.set_timesteps(n).unwrap();
        ddim.set_timesteps(n).unwrap();
        assert_eq!(ddpm.timesteps(), expected, "{context}");
        assert_eq!(ddim.timesteps(), expected, "{context}");
        checked += 1;
    }
    assert!(checked > 100, "{checked} lists checked");
}

#[test]
fn default_configs_match_diffusers() {
    for file in ["scheduler_ddpm_default.json", "scheduler_ddim_default.json"] {
        let config = SchedulerConfig::from_file(&fixtures().join(file)).unwrap();
        assert_eq!(config, SchedulerConfig::default(), "{file}");
    }
    let path = fixtures().join("scheduler_ddim_stable_diffusion.json");
    let config = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(config.beta_schedule, BetaSchedule::ScaledLinear);
    assert_eq!(config.beta_start, 0.00085);
    assert_eq!(config.beta_end, 0.012);
    assert!(!config.clip_sample);
    assert!(!config.set_alpha_to_one);
    assert_eq!(config.steps_offset, 1);
    assert_eq!(config.trained_betas, None);
    assert_eq!(config.variance_type, VarianceType::FixedSmall);
}

#[test]
fn config_round_trips_through_json() {
    let config = SchedulerConfig {
        beta_schedule: BetaSchedule::SquaredcosCapV2,
        variance_type: VarianceType::LearnedRange,
        prediction_type: Prediction::VPrediction,
        timestep_spacing: TimestepSpacing::Trailing,
        trained_betas: Some(vec![0.1; 1000]),
        steps_offset: 1,
        ..SchedulerConfig::default()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(
        json.contains(r#""beta_schedule":"squaredcos_cap_v2""#),
        "{json}"
    );
    assert!(
        json.contains(r#""variance_type":"learned_range""#),
        "{json}"
    );
    assert!(
        json.contains(r#""prediction_type":"v_prediction""#),
        "{json}"
    );
    assert!(json.contains(r#""timestep_spacing":"trailing""#), "{json}");
    assert_eq!(SchedulerConfig::from_json(&json).unwrap(), config);
    let parsed: SchedulerConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, config);
    // null stands for the default, as in diffusers' own files.
    let config = SchedulerConfig::from_json(r#"{"variance_type": null, "trained_betas": null}"#);
    assert_eq!(config.unwrap(), SchedulerConfig::default());
}

#[test]
fn sampler_steps_like_its_scheduler() {
    let tensors = tensors();
    let sample = &tensors["input.sample.1"];
    let model_output = &tensors["input.model_output.1"];
    let noise = &tensors["input.noise.1"];
    let config = SchedulerConfig {
        clip_sample: false,
        ..SchedulerConfig::default()
    };
    let mut ddpm = DdpmScheduler::new(config.clone()).unwrap();
    ddpm.set_timesteps(20).unwrap();
    let mut sampler = Sampler::Ddpm(DdpmScheduler::new(config.clone()).unwrap());
    sampler.set_timesteps(20).unwrap();
    assert_eq!(sampler.timesteps(), ddpm.timesteps());
    assert_eq!(sampler.config(), &config);
    assert_eq!(sampler.schedule(), ddpm.schedule());
    let t = sampler.timesteps()[3];
    let expected = ddpm.step(model_output, t, sample, Some(noise)).unwrap();
    let out = sampler.step(model_output, t, sample, Some(noise)).unwrap();
    assert!(out.prev_sample.equal(&expected.prev_sample));

    let options = DdimStepOptions {
        eta: 0.5,
        use_clipped_model_output: true,
    };
    let mut ddim = DdimScheduler::new(config.clone()).unwrap();
    ddim.set_timesteps(20).unwrap();
    let mut sampler = Sampler::Ddim {
        scheduler: DdimScheduler::new(config).unwrap(),
        options,
    };
    sampler.set_timesteps(20).unwrap();
    let expected = ddim
        .step(model_output, t, sample, options, Some(noise))
        .unwrap();
    let out = sampler.step(model_output, t, sample, Some(noise)).unwrap();
    assert!(out.prev_sample.equal(&expected.prev_sample));
    assert!(out
        .pred_original_sample
        .equal(&expected.pred_original_sample));
}

#[test]
fn ddpm_last_step_adds_no_noise() {
    let tensors = tensors();
    let sample = &tensors["input.sample.2"];
    let model_output = &tensors["input.model_output.2"];
    let scheduler = DdpmScheduler::new(SchedulerConfig::default()).unwrap();
    let without = scheduler.step(model_output, 0, sample, None).unwrap();
    let with = scheduler
        .step(model_output, 0, sample, Some(&tensors["input.noise.2"]))
        .unwrap();
    assert!(without.prev_sample.equal(&with.prev_sample));
    // Without set_timesteps the step after t = 0 is the data itself, so the
    // output is the clipped prediction of x_0.
    assert!(max_error(&without.prev_sample, &without.pred_original_sample) < 1e-6);
}

#[test]
fn ddim_eta_one_at_zero_snr_is_finite() {
    // At the zero-SNR timestep, 1 - abar_prev - sigma^2 is 0 for eta = 1 but
    // rounds below 0 in float32, where diffusers returns NaN.
    let tensors = tensors();
    let sample = &tensors["input.sample.0"];
    let model_output = &tensors["input.model_output.0"];
    let noise = &tensors["input.noise.0"];
    let config = SchedulerConfig::from_json(
        r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "rescale_betas_zero_snr": true, "prediction_type": "v_prediction",
            "timestep_spacing": "trailing"}"#,
    )
    .unwrap();
    let mut scheduler = DdimScheduler::new(config).unwrap();
    scheduler.set_timesteps(25).unwrap();
    let options = DdimStepOptions {
        eta: 1.0,
        use_clipped_model_output: false,
    };
    let out = scheduler
        .step(model_output, 999, sample, options, Some(noise))
        .unwrap();
    assert_eq!(out.prev_sample.isfinite().all().int64_value(&[]), 1);
    // With no direction term left, x_{t-1} = sqrt(abar_prev) x_0 + sigma z
    // with sigma^2 = 1 - abar_prev.
    let abar_prev = f64::from(scheduler.schedule().alphas_cumprod()[959]);
    let expected = &out.pred_original_sample * abar_prev.sqrt() + noise * (1.0 - abar_prev).sqrt();
    assert!(max_error(&out.prev_sample, &expected) < 1e-5);
}

#[test]
fn half_precision_thresholding_follows_float() {
    let tensors = tensors();
    let sample = &tensors["input.sample.3"];
    let model_output = &tensors["input.model_output.3"];
    let noise = &tensors["input.noise.3"];
    let config = SchedulerConfig {
        thresholding: true,
        sample_max_value: 2.0,
        ..SchedulerConfig::default()
    };
    let scheduler = DdpmScheduler::new(config).unwrap();
    let full = scheduler
        .step(model_output, 500, sample, Some(noise))
        .unwrap();
    let half = scheduler
        .step(
            &model_output.to_kind(Kind::Half),
            500,
            &sample.to_kind(Kind::Half),
            Some(&noise.to_kind(Kind::Half)),
        )
        .unwrap();
    assert_eq!(half.prev_sample.kind(), Kind::Half);
    let max = half.pred_original_sample.abs().max().double_value(&[]);
    assert!(max <= 1.0 + 1e-3, "thresholded x_0 reaches {max}");
    assert!(max_error(&half.prev_sample, &full.prev_sample) < 2e-2);
}

fn invalid_input<T: std::fmt::Debug>(result: common::Result<T>) -> String {
    match result {
        Err(Error::InvalidInput(message)) => message,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn unsupported<T: std::fmt::Debug>(result: common::Result<T>) -> String {
    match result {
        Err(Error::Unsupported(message)) => message,
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn inference_step_counts_are_checked() {
    let mut ddpm = DdpmScheduler::new(SchedulerConfig::default()).unwrap();
    let mut ddim = DdimScheduler::new(SchedulerConfig::default()).unwrap();
    let message = invalid_input(ddpm.set_timesteps(0));
    assert!(message.contains("at least 1"), "{message}");
    let message = invalid_input(ddim.set_timesteps(-3));
    assert!(message.contains("-3"), "{message}");
    let message = invalid_input(ddpm.set_timesteps(1001));
    assert!(
        message.contains("1001") && message.contains("1000"),
        "{message}"
    );
    invalid_input(ddim.set_timesteps(1001));
    let mut sampler = Sampler::Ddpm(DdpmScheduler::new(SchedulerConfig::default()).unwrap());
    invalid_input(sampler.set_timesteps(0));
    // A failed call leaves the timesteps as they were.
    assert_eq!(ddpm.timesteps().len(), 1000);
    ddpm.set_timesteps(1000).unwrap();
    let config = SchedulerConfig {
        steps_offset: 1,
        ..SchedulerConfig::default()
    };
    let message = invalid_input(DdpmScheduler::new(config).unwrap().set_timesteps(1000));
    assert!(message.contains("steps_offset"), "{message}");
}

#[test]
fn unsupported_config_names_are_reported() {
    let message = unsupported(SchedulerConfig::from_json(
        r#"{"beta_schedule": "laplace"}"#,
    ));
    assert!(message.contains("\"laplace\""), "{message}");
    assert!(message.contains("squaredcos_cap_v2"), "{message}");
    let message = unsupported(SchedulerConfig::from_json(
        r#"{"variance_type": "fixed_medium"}"#,
    ));
    assert!(
        message.contains("fixed_medium") && message.contains("learned_range"),
        "{message}"
    );
    let message = unsupported(SchedulerConfig::from_json(
        r#"{"prediction_type": "noise"}"#,
    ));
    assert!(message.contains("v_prediction"), "{message}");
    let message = unsupported(SchedulerConfig::from_json(
        r#"{"timestep_spacing": "karras"}"#,
    ));
    assert!(message.contains("linspace"), "{message}");
    assert!("cosine".parse::<BetaSchedule>().is_err());
    assert_eq!(
        "scaled_linear".parse::<BetaSchedule>().unwrap(),
        BetaSchedule::ScaledLinear
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"_class_name": "DDPMScheduler", "beta_schedule": "exp"}"#,
    )
    .unwrap();
    let message = unsupported(SchedulerConfig::from_file(&path));
    assert!(message.contains("scheduler_config.json"), "{message}");
    // serde's own path reports the same message.
    let error = serde_json::from_str::<SchedulerConfig>(r#"{"beta_schedule": "exp"}"#).unwrap_err();
    assert!(error.to_string().contains("squaredcos_cap_v2"), "{error}");
}

#[test]
fn malformed_configs_are_rejected() {
    invalid_input(SchedulerConfig::from_json("{"));
    let message = invalid_input(SchedulerConfig::from_json(
        r#"{"num_train_timesteps": "many"}"#,
    ));
    assert!(message.contains("num_train_timesteps"), "{message}");
    let message = invalid_input(SchedulerConfig::from_json(r#"{"clip_sample_range": 0}"#));
    assert!(message.contains("clip_sample_range"), "{message}");
    let message = invalid_input(SchedulerConfig::from_json(
        r#"{"dynamic_thresholding_ratio": 1.5}"#,
    ));
    assert!(message.contains("dynamic_thresholding_ratio"), "{message}");
    invalid_input(SchedulerConfig::from_json(r#"{"steps_offset": -1}"#));
    let message = invalid_input(SchedulerConfig::from_json(
        r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}"#,
    ));
    assert!(message.contains("trained_betas"), "{message}");
    let config = SchedulerConfig {
        num_train_timesteps: 0,
        ..SchedulerConfig::default()
    };
    invalid_input(DdpmScheduler::new(config));
    let config = SchedulerConfig {
        beta_end: 1.5,
        ..SchedulerConfig::default()
    };
    let message = invalid_input(DdimScheduler::new(config));
    assert!(message.contains("beta_end"), "{message}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    assert!(matches!(
        SchedulerConfig::from_file(&missing),
        Err(Error::Io { .. })
    ));
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "[1, 2]").unwrap();
    assert!(matches!(
        SchedulerConfig::from_file(&broken),
        Err(Error::Format { .. })
    ));
}

#[test]
fn schedule_arguments_are_checked() {
    let message = invalid_input(NoiseSchedule::new(BetaSchedule::Linear, 0, 1e-4, 0.02));
    assert!(message.contains("num_train_timesteps"), "{message}");
    let too_many = MAX_TRAIN_TIMESTEPS + 1;
    invalid_input(NoiseSchedule::new(
        BetaSchedule::Linear,
        too_many,
        1e-4,
        0.02,
    ));

    let message = invalid_input(NoiseSchedule::new(
        BetaSchedule::ScaledLinear,
        1000,
        0.0,
        0.02,
    ));
    assert!(message.contains("beta_start"), "{message}");
    invalid_input(NoiseSchedule::new(
        BetaSchedule::Sigmoid,
        1000,
        1e-4,
        f64::NAN,
    ));

    let message = invalid_input(NoiseSchedule::from_betas(&[0.1, 1.0]));
    assert!(message.contains("timestep 1"), "{message}");
    invalid_input(NoiseSchedule::from_betas(&[]));

    let single = NoiseSchedule::new(BetaSchedule::Linear, 1, 1e-4, 0.02).unwrap();
    invalid_input(single.rescale_zero_terminal_snr());

    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
    invalid_input(schedule.alpha_cumprod(1000));
    let first = schedule.alpha_cumprod(0).unwrap();
    assert_eq!(first, schedule.alphas_cumprod()[0]);
}

#[test]
fn noising_arguments_are_checked() {
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
    let original = Tensor::zeros([2, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
    let noise = original.ones_like();
    let timesteps = Tensor::from_slice(&[0i64, 999]);
    let noisy = schedule.add_noise(&original, &noise, &timesteps).unwrap();
    assert_eq!(noisy.size(), original.size());

    let message =
        invalid_input(schedule.add_noise(&original, &noise, &Tensor::from_slice(&[0i64, 1000])));
    assert!(message.contains("1000"), "{message}");
    invalid_input(schedule.velocity(&original, &noise, &Tensor::from_slice(&[-1i64, 5])));
    let message =
        invalid_input(schedule.add_noise(&original, &noise, &Tensor::from_slice(&[1i64, 2, 3])));
    assert!(message.contains("[3]"), "{message}");
    invalid_input(schedule.add_noise(
        &original,
        &noise,
        &Tensor::from_slice(&[1i64, 2]).reshape([1, 2]),
    ));
    let message =
        invalid_input(schedule.add_noise(&original, &noise, &Tensor::from_slice(&[1.0f32, 2.0])));
    assert!(message.contains("integer"), "{message}");
    let small = Tensor::zeros([2, 3, 4], (Kind::Float, tch::Device::Cpu));
    let message = invalid_input(schedule.add_noise(&original, &small, &timesteps));
    assert!(message.contains("shape"), "{message}");
    invalid_input(schedule.target(Prediction::Epsilon, &original, &small, &timesteps));
    invalid_input(schedule.add_noise(&original, &noise.to_kind(Kind::Double), &timesteps));
    invalid_input(schedule.add_noise(
        &original.to_kind(Kind::Int64),
        &noise.to_kind(Kind::Int64),
        &timesteps,
    ));
    invalid_input(schedule.add_noise(&Tensor::from(1.0f32), &Tensor::from(1.0f32), &timesteps));
}

#[test]
fn step_arguments_are_checked() {
    let sample = Tensor::zeros([2, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
    let model_output = sample.ones_like();
    let noise = sample.ones_like();
    let mut ddpm = DdpmScheduler::new(SchedulerConfig::default()).unwrap();
    let message = invalid_input(ddpm.step(&model_output, 1000, &sample, Some(&noise)));
    assert!(message.contains("1000"), "{message}");
    invalid_input(ddpm.step(&model_output, -1, &sample, Some(&noise)));
    let wide = Tensor::zeros([2, 6, 4, 4], (Kind::Float, tch::Device::Cpu));
    let message = invalid_input(ddpm.step(&wide, 10, &sample, Some(&noise)));
    assert!(message.contains("learned"), "{message}");
    let message = invalid_input(ddpm.step(&model_output, 10, &sample, Some(&wide)));
    assert!(message.contains("noise"), "{message}");
    invalid_input(ddpm.step(&model_output.to_kind(Kind::Double), 10, &sample, None));
    invalid_input(ddpm.step(
        &model_output.to_kind(Kind::Int64),
        10,
        &sample.to_kind(Kind::Int64),
        None,
    ));
    ddpm.set_timesteps(10).unwrap();
    let message = invalid_input(ddpm.step(&model_output, 901, &sample, Some(&noise)));
    assert!(message.contains("set_timesteps"), "{message}");

    let learned = SchedulerConfig {
        variance_type: VarianceType::LearnedRange,
        ..SchedulerConfig::default()
    };
    let learned = DdpmScheduler::new(learned).unwrap();
    let message = invalid_input(learned.step(&model_output, 10, &sample, Some(&noise)));
    assert!(message.contains("twice"), "{message}");
    learned.step(&wide, 10, &sample, Some(&noise)).unwrap();

    let mut ddim = DdimScheduler::new(SchedulerConfig::default()).unwrap();
    let options = DdimStepOptions::default();
    let message = invalid_input(ddim.step(&model_output, 10, &sample, options, None));
    assert!(message.contains("set_timesteps"), "{message}");
    ddim.set_timesteps(50).unwrap();
    ddim.step(&model_output, 980, &sample, options, None)
        .unwrap();
    invalid_input(ddim.step(&model_output, 1000, &sample, options, None));
    invalid_input(ddim.step(&wide, 980, &sample, options, None));
    for eta in [-0.5, f64::NAN, f64::INFINITY] {
        let options = DdimStepOptions {
            eta,
            ..DdimStepOptions::default()
        };
        let message = invalid_input(ddim.step(&model_output, 980, &sample, options, Some(&noise)));
        assert!(message.contains("eta"), "{message}");
    }
    // At t = 20, the last of 50 steps, abar_prev = abar_0 is close to 1 and
    // eta = 2 makes sigma_t^2 larger than 1 - abar_prev.
    let options = DdimStepOptions {
        eta: 2.0,
        ..DdimStepOptions::default()
    };
    let message = invalid_input(ddim.step(&model_output, 20, &sample, options, Some(&noise)));
    assert!(message.contains("too large"), "{message}");
}

#[test]
fn custom_timesteps_are_checked() {
    let mut ddpm = DdpmScheduler::new(SchedulerConfig::default()).unwrap();
    invalid_input(ddpm.set_custom_timesteps(&[]));
    let message = invalid_input(ddpm.set_custom_timesteps(&[900, 500, 500, 0]));
    assert!(message.contains("decreasing"), "{message}");
    invalid_input(ddpm.set_custom_timesteps(&[1000, 10]));
    invalid_input(ddpm.set_custom_timesteps(&[10, -1]));
    ddpm.set_custom_timesteps(&[999, 10]).unwrap();
    assert_eq!(ddpm.timesteps(), [999, 10]);
}

#[test]
fn min_snr_weights_scale_the_x0_error() {
    // With x_t = sqrt(a) x_0 + sqrt(1 - a) eps, an error e in the predicted
    // noise is an error -e sqrt((1 - a) / a) in the implied x_0, and an
    // error e in the predicted velocity is an error -e sqrt(1 - a). Each
    // weight must turn the prediction's squared error into
    // min(snr, gamma) times the squared error of x_0.
    let gamma = 5.0;
    for beta_schedule in [BetaSchedule::Linear, BetaSchedule::SquaredcosCapV2] {
        let schedule = NoiseSchedule::new(beta_schedule, 1000, 1e-4, 0.02).unwrap();
        for t in [0, 1, 50, 200, 500, 800, 998] {
            let a = f64::from(schedule.alpha_cumprod(t).unwrap());
            let snr = schedule.snr(t).unwrap();
            assert!((snr - a / (1.0 - a)).abs() <= 1e-12 * snr.max(1.0));
            let error = 0.3;
            let cases = [
                (Prediction::Epsilon, error * ((1.0 - a) / a).sqrt()),
                (Prediction::VPrediction, error * (1.0 - a).sqrt()),
                (Prediction::Sample, error),
            ];
            for (prediction, x0_error) in cases {
                let weight = schedule.min_snr_weight(t, prediction, gamma).unwrap();
                let expected = snr.min(gamma) * x0_error * x0_error;
                let got = weight * error * error;
                assert!(
                    (got - expected).abs() <= 1e-9 * expected.max(1e-12),
                    "{beta_schedule:?} t = {t} {prediction:?}: {got} != {expected}"
                );
            }
        }
        // Where the SNR is below gamma, epsilon prediction keeps weight 1.
        assert_eq!(
            schedule
                .min_snr_weight(999, Prediction::Epsilon, gamma)
                .unwrap(),
            1.0
        );
    }
    let schedule = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
    for bad in [0.0, -2.0, f64::NAN] {
        let error = schedule
            .min_snr_weight(10, Prediction::Epsilon, bad)
            .unwrap_err();
        assert!(error.to_string().contains("gamma"), "{error}");
    }
    assert!(schedule
        .min_snr_weight(1000, Prediction::Epsilon, gamma)
        .is_err());
}
