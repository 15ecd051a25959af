//! The pixel map, the logit-Laplace density, the Gumbel-Softmax relaxation
//! and the schedules, checked against their definitions.

use dvae::pixels::{logit_laplace_log_prob, map_pixels, unmap_pixels, LOGIT_LAPLACE_EPS};
use dvae::relax::{
    gumbel_from_uniform, gumbel_noise, gumbel_softmax, kl_to_uniform, temperature_schedule,
    Schedule,
};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

#[test]
fn pixel_map_round_trips_within_margin() {
    let x = Tensor::linspace(0.0, 1.0, 1001, F64);
    let mapped = map_pixels(&x);
    assert!((mapped.min().double_value(&[]) - LOGIT_LAPLACE_EPS).abs() < 1e-12);
    assert!((mapped.max().double_value(&[]) - (1.0 - LOGIT_LAPLACE_EPS)).abs() < 1e-12);
    let back = unmap_pixels(&mapped);
    assert!((back - &x).abs().max().double_value(&[]) < 1e-12);
    // Values outside the margin, as a decoder may give, clamp to [0, 1].
    let outside = Tensor::from_slice(&[0.0f64, 0.05, 0.95, 1.0]);
    let clamped = Vec::<f64>::try_from(unmap_pixels(&outside)).unwrap();
    assert_eq!(clamped, [0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn log_density_matches_formula_at_point() {
    let (x, mu, b) = (0.3f64, 0.4f64, 0.7f64);
    let logit = (x / (1.0 - x)).ln();
    let expected = -(logit - mu).abs() / b - (2.0 * b * x * (1.0 - x)).ln();
    let got = logit_laplace_log_prob(&Tensor::from(x), &Tensor::from(mu), &Tensor::from(b.ln()))
        .double_value(&[]);
    assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
}

#[test]
fn density_integrates_to_one() {
    // The trapezoid rule on a fine grid. The density vanishes at both ends
    // when b < 1 and stays finite when b = 1.
    let n = 2_000_001;
    let x = Tensor::linspace(0.0, 1.0, n, F64).narrow(0, 1, n - 2);
    let h = 1.0 / (n - 1) as f64;
    for (mu, b) in [(0.0, 0.2), (1.5, 0.5), (-2.0, 0.9), (0.3, 1.0)] {
        let mu_t = x.full_like(mu);
        let log_b = x.full_like(f64::ln(b));
        let density = logit_laplace_log_prob(&x, &mu_t, &log_b).exp();
        let integral = density.sum(Kind::Double).double_value(&[]) * h;
        assert!(
            (integral - 1.0).abs() < 2e-3,
            "mu {mu}, b {b}: integral {integral}"
        );
    }
}

#[test]
fn gumbel_noise_is_finite_at_interval_ends() {
    let ends = gumbel_from_uniform(&Tensor::from_slice(&[0.0f32, 1.0, 0.5]));
    let values = Vec::<f32>::try_from(&ends).unwrap();
    assert!(values.iter().all(|v| v.is_finite()), "{values:?}");
    assert!(values[0] < values[2]);
    assert!(values[2] < values[1]);
    tch::manual_seed(0);
    let noise = gumbel_noise(&Tensor::zeros([4_000_000], (Kind::Float, Device::Cpu)));
    assert!(bool::try_from(noise.isfinite().all()).unwrap());
    // The standard Gumbel distribution has mean Euler's gamma and variance pi^2 / 6.
    let mean = noise.mean(Kind::Double).double_value(&[]);
    let var = noise.var(true).double_value(&[]);
    assert!((mean - 0.577_215_66).abs() < 5e-3, "mean {mean}");
    assert!(
        (var - std::f64::consts::PI.powi(2) / 6.0).abs() < 1e-2,
        "variance {var}"
    );
}

#[test]
fn gumbel_softmax_approaches_argmax_as_tau_falls() {
    let logits = Tensor::from_slice(&[1.0f32, 0.5, -0.3, 2.0, 0.0, -1.0, 0.7, 0.2])
        .view([1, 8])
        .repeat([2000, 1]);
    let mut last_max = 0.0;
    for tau in [1.0, 0.25, 1.0 / 16.0, 0.01] {
        tch::manual_seed(7);
        let soft = gumbel_softmax(&logits, tau, false, 1);
        tch::manual_seed(7);
        let noisy_argmax = (&logits + gumbel_noise(&logits)).argmax(1, false);
        assert!(soft.argmax(1, false).equal(&noisy_argmax));
        let mean_max = soft
            .amax([1i64].as_slice(), false)
            .mean(Kind::Double)
            .double_value(&[]);
        assert!(mean_max > last_max, "tau {tau}: {mean_max} <= {last_max}");
        last_max = mean_max;
    }
    assert!(last_max > 0.99, "{last_max}");
}

#[test]
fn hard_samples_are_one_hot_softmax_draws() {
    tch::manual_seed(3);
    let probs = [0.5f64, 0.3, 0.15, 0.05];
    let logits = Tensor::from_slice(&probs)
        .log()
        .to_kind(Kind::Float)
        .view([1, 4])
        .repeat([40_000, 1]);
    let hard = gumbel_softmax(&logits, 0.5, true, 1);
    let ones = hard.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
    assert!((ones - 1.0).abs().max().double_value(&[]) < 1e-6);
    assert!(bool::try_from(hard.eq(0.0).logical_or(&hard.eq(1.0)).all()).unwrap());
    let freq = Vec::<f64>::try_from(hard.mean_dim([0i64].as_slice(), false, Kind::Double)).unwrap();
    for (f, p) in freq.iter().zip(probs) {
        assert!((f - p).abs() < 0.01, "{freq:?} vs {probs:?}");
    }
}

#[test]
fn relaxed_and_straight_through_gradients_flow() {
    for hard in [false, true] {
        tch::manual_seed(11);
        let logits = Tensor::randn([16, 32], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let weights = Tensor::randn([16, 32], (Kind::Float, Device::Cpu));
        let sample = gumbel_softmax(&logits, 1.0 / 16.0, hard, 1);
        (sample * &weights).sum(Kind::Float).backward();
        let grad = logits.grad();
        assert!(bool::try_from(grad.isfinite().all()).unwrap());
        assert!(
            grad.abs().sum(Kind::Double).double_value(&[]) > 1e-3,
            "hard {hard}"
        );
    }
}

#[test]
fn kl_to_uniform_at_uniform_and_certain_codes() {
    let k = 64;
    let uniform = Tensor::zeros([3, k, 2, 2], (Kind::Float, Device::Cpu));
    assert!(kl_to_uniform(&uniform, 1).abs().max().double_value(&[]) < 1e-6);
    let certain = Tensor::zeros([3, k, 2, 2], (Kind::Float, Device::Cpu)).index_fill(
        1,
        &Tensor::from_slice(&[5i64]),
        100.0,
    );
    let kl = kl_to_uniform(&certain, 1);
    assert_eq!(kl.size(), [3, 2, 2]);
    assert!((kl - (k as f64).ln()).abs().max().double_value(&[]) < 1e-4);
}

#[test]
fn temperature_schedule_falls_to_one_sixteenth() {
    let schedule = temperature_schedule(1000);
    assert_eq!(schedule.at(0), 1.0);
    assert!((schedule.at(500) - (1.0 + 1.0 / 16.0) / 2.0).abs() < 1e-12);
    assert_eq!(schedule.at(1000), 1.0 / 16.0);
    assert_eq!(schedule.at(5000), 1.0 / 16.0);
    let values: Vec<f64> = (0..=1000).map(|s| schedule.at(s)).collect();
    assert!(values.windows(2).all(|w| w[1] <= w[0]));
    let warm_up = Schedule {
        start: 0.0,
        end: 6.6,
        steps: 0,
    };
    assert_eq!(warm_up.at(0), 6.6);
}
