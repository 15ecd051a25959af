//! A small training loop: AdamW with decoupled weight decay, linear warm-up
//! then cosine decay, gradient clipping, periodic evaluation, atomic
//! checkpoints and exact resume.
//!
//! A model trains through [`Task`], which turns a step number into a loss.
//! [`train`] owns the optimizer and the schedule. Every `checkpoint_every`
//! steps it has the task export the model directory, then writes
//! `training-state.safetensors`: the weights, AdamW's moments and the step,
//! in one atomically renamed file. Resuming from it continues the same
//! trajectory: batches and dropout are seeded by step, so an interrupted run
//! loses at most one checkpoint interval and then matches an uninterrupted
//! one.

use crate::checkpoint;
use crate::progress;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// The file that contains everything a resumed run needs.
pub const STATE_FILE: &str = "training-state.safetensors";

/// Hyper-parameters of [`train`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Optimizer steps in total, including those of a resumed run.
    pub steps: u64,
    /// The peak learning rate, reached after the warm-up.
    pub learning_rate: f64,
    /// The learning rate at the end of the cosine decay.
    pub min_learning_rate: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: u64,
    /// AdamW's decoupled weight decay, applied to matrices and embeddings
    /// only (not to biases and norm gains).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub grad_clip: f64,
    /// Evaluate every this many steps, and at the end.
    pub eval_every: u64,
    /// Write a checkpoint every this many steps, and at the end.
    pub checkpoint_every: u64,
    /// Seeds batches and dropout, per step.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 1000,
            learning_rate: 1e-3,
            min_learning_rate: 1e-4,
            warmup_steps: 100,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            grad_clip: 1.0,
            eval_every: 250,
            checkpoint_every: 250,
            seed: 1337,
        }
    }
}

impl TrainOptions {
    /// Checks that the values make sense, naming the first that does not.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, value: String, rule: &str| {
            Err(Error::InvalidInput(format!("{name} {value} {rule}")))
        };
        if self.steps == 0 {
            return bad("steps", "0".into(), "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(
                "learning rate",
                self.learning_rate.to_string(),
                "must be positive",
            );
        }
        if !(0.0..=self.learning_rate).contains(&self.min_learning_rate) {
            return bad(
                "minimum learning rate",
                self.min_learning_rate.to_string(),
                "must be between 0 and the learning rate",
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(
                "weight decay",
                self.weight_decay.to_string(),
                "must be 0 or more",
            );
        }
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(name, beta.to_string(), "must be in [0, 1)");
            }
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return bad("eps", self.eps.to_string(), "must be positive");
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return bad(
                "gradient clip",
                self.grad_clip.to_string(),
                "must be 0 (off) or more",
            );
        }
        if self.eval_every == 0 || self.checkpoint_every == 0 {
            return bad(
                "evaluation and checkpoint intervals",
                format!("{} and {}", self.eval_every, self.checkpoint_every),
                "must be at least 1",
            );
        }
        Ok(())
    }

    /// Returns the learning rate of step `step` (0-based): linear warm-up to
    /// `learning_rate`, then a cosine decay to `min_learning_rate` at the
    /// last step.
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_learning_rate + cosine * (self.learning_rate - self.min_learning_rate)
    }
}

struct Parameter {
    name: String,
    value: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// AdamW (Loshchilov and Hutter, 2019): Adam with the weight decay applied
/// to the weights directly, `w -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * w)`.
pub struct AdamW {
    parameters: Vec<Parameter>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Updates applied so far.
    steps: i64,
}

impl AdamW {
    /// Creates the optimizer over every trainable variable of `vs`. Weight
    /// decay applies to tensors of two or more dimensions.
    pub fn new(vs: &VarStore, options: &TrainOptions) -> Result<Self> {
        let mut variables: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let parameters = variables
            .into_iter()
            .map(|(name, value)| {
                Ok(Parameter {
                    decay: value.dim() >= 2,
                    exp_avg: value.f_zeros_like()?,
                    exp_avg_sq: value.f_zeros_like()?,
                    name,
                    value,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if parameters.is_empty() {
            return Err(Error::InvalidInput(
                "the model has no trainable variables".into(),
            ));
        }
        Ok(Self {
            parameters,
            beta1: options.beta1,
            beta2: options.beta2,
            eps: options.eps,
            weight_decay: options.weight_decay,
            steps: 0,
        })
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.parameters {
            p.value.zero_grad();
        }
    }

    /// Scales the gradients so that their global L2 norm is at most
    /// `max_norm`, and returns the norm before scaling.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = self
            .parameters
            .iter()
            .map(|p| p.value.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return Ok(0.0);
        }
        let norms: Vec<Tensor> = grads
            .iter()
            .map(|g| g.f_norm().and_then(|n| n.f_to_kind(Kind::Double)))
            .collect::<std::result::Result<_, _>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?.double_value(&[]);
        if max_norm > 0.0 && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            for mut g in grads {
                let _ = g.f_mul_scalar_(scale)?;
            }
        }
        Ok(total)
    }

    /// Applies one update with learning rate `lr` from the current gradients;
    /// variables without a gradient are left alone.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let correction1 = 1.0 - b1.powi(self.steps as i32);
        let correction2 = 1.0 - b2.powi(self.steps as i32);
        for p in &mut self.parameters {
            let grad = p.value.grad();
            if !grad.defined() {
                continue;
            }
            if p.decay && self.weight_decay > 0.0 {
                let _ = p.value.f_mul_scalar_(1.0 - lr * self.weight_decay)?;
            }
            // In place, with one temporary per parameter (the denominator):
            // v = b2 v + (1 - b2) g^2 as ((b2 / (1 - b2)) v + g^2) (1 - b2).
            let _ = p.exp_avg.f_lerp_(&grad, 1.0 - b1)?;
            let _ = p.exp_avg_sq.f_mul_scalar_(b2 / (1.0 - b2))?;
            let _ = p.exp_avg_sq.f_addcmul_(&grad, &grad)?;
            let _ = p.exp_avg_sq.f_mul_scalar_(1.0 - b2)?;
            let mut denom = p.exp_avg_sq.f_sqrt()?;
            let _ = denom.f_div_scalar_(correction2.sqrt())?;
            let _ = denom.f_add_scalar_(self.eps)?;
            // w -= (lr / correction1) * m / denom, as addcdiv has no scale.
            let _ = denom.f_mul_scalar_(-correction1 / lr)?;
            let _ = p.value.f_addcdiv_(&p.exp_avg, &denom)?;
        }
        Ok(())
    }

    /// Returns the optimizer's state as named tensors.
    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = Vec::with_capacity(2 * self.parameters.len());
        for p in &self.parameters {
            tensors.push((
                format!("optimizer.exp_avg.{}", p.name),
                p.exp_avg.shallow_clone(),
            ));
            tensors.push((
                format!("optimizer.exp_avg_sq.{}", p.name),
                p.exp_avg_sq.shallow_clone(),
            ));
        }
        tensors
    }

    /// Restores the moments written by [`AdamW::state_tensors`].
    fn load_state(
        &mut self,
        tensors: &mut HashMap<String, Tensor>,
        steps: i64,
        path: &Path,
    ) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for p in &mut self.parameters {
            for (kind, target) in [
                ("exp_avg", &mut p.exp_avg),
                ("exp_avg_sq", &mut p.exp_avg_sq),
            ] {
                let name = format!("optimizer.{kind}.{}", p.name);
                let saved = tensors.remove(&name).ok_or_else(|| {
                    Error::format(path, "training state", format!("no tensor {name}"))
                })?;
                if saved.size() != target.size() {
                    return Err(Error::ShapeMismatch {
                        name,
                        expected: target.size(),
                        found: saved.size(),
                    });
                }
                target.f_copy_(&saved)?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// A model being trained by [`train`]: a loss per step, a held-out loss, and
/// an export of the model.
pub trait Task {
    /// Returns the training loss of step `step`, computed with gradients and
    /// dropout. The batch must depend only on the step (and a seed), so that
    /// a resumed run trains on the batches of an uninterrupted one.
    fn train_loss(&mut self, step: u64) -> Result<Tensor>;

    /// Returns the mean loss on held-out data, without gradients.
    fn eval_loss(&mut self) -> Result<f64>;

    /// Returns the number of tokens (or examples) in one training batch, for
    /// the throughput shown on the progress bar.
    fn items_per_step(&self) -> u64;

    /// Returns the unit of [`Task::items_per_step`], such as `"tok"`.
    fn item_name(&self) -> &'static str {
        "tok"
    }

    /// Writes the model whose variables are `vs` in its usable form (a model
    /// directory) to `dir`.
    fn export(&self, vs: &VarStore, dir: &Path) -> Result<()>;

    /// Runs after the optimizer update of step `step`, without gradients
    /// (for example to update an exponential moving average of the
    /// weights). Variables it changes must be in the variable store, so that
    /// the training state saves them.
    fn after_step(&mut self, step: u64) -> Result<()> {
        let _ = step;
        Ok(())
    }

    /// Other measurements of the last [`Task::eval_loss`], shown after the
    /// losses (for example `"PSNR 21.4 dB"`).
    fn eval_summary(&self) -> Option<String> {
        None
    }
}

/// A random number generator for the batch of step `step`, so that batches
/// depend on the seed and the step alone.
pub fn step_rng(seed: u64, step: u64) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::seed_from_u64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One evaluation during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Steps done when it was measured.
    pub step: u64,
    /// The mean training loss since the previous evaluation.
    pub train_loss: f64,
    pub eval_loss: f64,
    /// Seconds spent training in this run when it was measured.
    pub seconds: f64,
}

/// The outcome of [`train`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainReport {
    /// The step the run started from (0, or that of the resumed checkpoint).
    pub start_step: u64,
    /// Every evaluation, including those of the run that was resumed.
    pub evaluations: Vec<Evaluation>,
    /// Training items per second in this run.
    pub items_per_second: f64,
}

#[derive(Serialize, Deserialize)]
struct StateMetadata {
    step: u64,
    evaluations: Vec<Evaluation>,
}

/// Returns the step of the training state in `dir`, if one is there.
pub fn saved_step(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(STATE_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(read_metadata(&path)?.step))
}

fn read_metadata(path: &Path) -> Result<StateMetadata> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, "safetensors", e.to_string()))?;
    let text = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("training"))
        .ok_or_else(|| Error::format(path, "training state", "no training metadata"))?;
    serde_json::from_str(text).map_err(|e| Error::format(path, "training state", e.to_string()))
}

fn write_state(
    path: &Path,
    vs: &VarStore,
    optimizer: &AdamW,
    metadata: &StateMetadata,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors.extend(optimizer.state_tensors());
    let json = serde_json::to_string(metadata).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let metadata = [("training".to_string(), json)].into_iter().collect();
    checkpoint::save(path, &tensors, Some(metadata))
}

fn read_state(path: &Path, vs: &mut VarStore, optimizer: &mut AdamW) -> Result<StateMetadata> {
    let metadata = read_metadata(path)?;
    let mut tensors: HashMap<String, Tensor> = checkpoint::read(path)?.into_iter().collect();
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vs.variables() {
        let saved = tensors
            .remove(&name)
            .ok_or_else(|| Error::format(path, "training state", format!("no tensor {name}")))?;
        if saved.size() != var.size() {
            return Err(Error::ShapeMismatch {
                name,
                expected: var.size(),
                found: saved.size(),
            });
        }
        var.f_copy_(&saved.f_to_kind(var.kind())?)?;
    }
    optimizer.load_state(&mut tensors, metadata.step as i64, path)?;
    // A tensor left over belongs to a layer the model no longer has: its
    // config was changed after the checkpoint was written.
    let mut extra: Vec<&String> = tensors.keys().collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(Error::format(
            path,
            "training state",
            format!(
                "it contains {} tensor(s) that the model does not have, such as {}: the \
                 model's config no longer matches the checkpoint, so restore the config of \
                 the run or start a new one",
                extra.len(),
                extra[0]
            ),
        ));
    }
    Ok(metadata)
}

/// Trains the variables of `vs` on `task` for `options.steps` steps, writing
/// checkpoints to `dir`.
///
/// With `resume`, training continues from `dir/training-state.safetensors`
/// (its weights, moments and step replace those of `vs`). Without
/// it, a state already in `dir` is an error rather than being overwritten.
pub fn train(
    vs: &mut VarStore,
    task: &mut impl Task,
    options: &TrainOptions,
    dir: &Path,
    resume: bool,
) -> Result<TrainReport> {
    options.validate()?;
    let state_path: PathBuf = dir.join(STATE_FILE);
    let mut optimizer = AdamW::new(vs, options)?;
    let mut metadata = StateMetadata {
        step: 0,
        evaluations: Vec::new(),
    };
    if state_path.is_file() {
        if !resume {
            let step = read_metadata(&state_path)?.step;
            return Err(Error::InvalidInput(format!(
                "{} contains a training run at step {step}: resume it, or train into another \
                 directory",
                dir.display()
            )));
        }
        metadata = read_state(&state_path, vs, &mut optimizer)?;
    } else if resume {
        return Err(Error::InvalidInput(format!(
            "nothing to resume: {} not found",
            state_path.display()
        )));
    }
    if metadata.step >= options.steps {
        return Err(Error::InvalidInput(format!(
            "the run in {} already did {} of {} steps: ask for more steps to continue it",
            dir.display(),
            metadata.step,
            options.steps
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let start_step = metadata.step;
    let bar = progress::bar(options.steps, "training");
    bar.set_position(start_step);
    let started = Instant::now();
    let (mut loss_sum, mut loss_count) = (0.0, 0u64);
    for step in start_step..options.steps {
        tch::manual_seed((options.seed.wrapping_mul(1_000_003) ^ step) as i64);
        let lr = options.learning_rate_at(step);
        optimizer.zero_grad();
        let loss = task.train_loss(step)?;
        let value = loss.f_double_value(&[])?;
        if !value.is_finite() {
            return Err(Error::InvalidInput(format!(
                "the training loss became {value} at step {step}: lower the learning rate \
                 (now {lr:.2e}) or clip gradients"
            )));
        }
        loss.f_backward()?;
        if options.grad_clip > 0.0 {
            optimizer.clip_grad_norm(options.grad_clip)?;
        }
        optimizer.step(lr)?;
        tch::no_grad(|| task.after_step(step))?;
        loss_sum += value;
        loss_count += 1;

        let done = step + 1;
        let seconds = started.elapsed().as_secs_f64();
        let rate = (done - start_step) as f64 * task.items_per_step() as f64 / seconds.max(1e-9);
        bar.set_position(done);
        bar.set_prefix(format!(
            "loss {value:.4} | {:.0} {}/s | lr {lr:.2e}",
            rate,
            task.item_name()
        ));
        let last = done == options.steps;
        if done % options.eval_every == 0 || last {
            let eval_loss = task.eval_loss()?;
            let evaluation = Evaluation {
                step: done,
                train_loss: loss_sum / loss_count as f64,
                eval_loss,
                seconds,
            };
            let summary = task
                .eval_summary()
                .map(|s| format!(", {s}"))
                .unwrap_or_default();
            bar.suspend(|| {
                eprintln!(
                    "step {done:>6}: train loss {:.4}, validation loss {eval_loss:.4}{summary} \
                     ({seconds:.0} s)",
                    evaluation.train_loss
                )
            });
            metadata.evaluations.push(evaluation);
            (loss_sum, loss_count) = (0.0, 0);
        }
        if done % options.checkpoint_every == 0 || last {
            metadata.step = done;
            task.export(vs, dir)?;
            write_state(&state_path, vs, &optimizer, &metadata)?;
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    Ok(TrainReport {
        start_step,
        evaluations: metadata.evaluations,
        items_per_second: (options.steps - start_step) as f64 * task.items_per_step() as f64
            / seconds.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    #[test]
    fn schedule_warms_up_then_decays_to_minimum() {
        let options = TrainOptions {
            steps: 110,
            warmup_steps: 10,
            learning_rate: 1.0,
            min_learning_rate: 0.1,
            ..Default::default()
        };
        assert!((options.learning_rate_at(0) - 0.1).abs() < 1e-12);
        assert!((options.learning_rate_at(9) - 1.0).abs() < 1e-12);
        assert!((options.learning_rate_at(10) - 1.0).abs() < 1e-12);
        assert!((options.learning_rate_at(60) - 0.55).abs() < 1e-12);
        assert!((options.learning_rate_at(110) - 0.1).abs() < 1e-12);
        let mut previous = f64::INFINITY;
        for step in 10..110 {
            let lr = options.learning_rate_at(step);
            assert!(lr <= previous);
            previous = lr;
        }
    }

    /// One AdamW step on a weight with a known gradient, against the update
    /// written out by hand.
    #[test]
    fn adamw_step_matches_formula() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy(
            "w",
            &Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]).view([2, 2]),
        );
        let options = TrainOptions {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut adamw = AdamW::new(&vs, &options).unwrap();
        let target = Tensor::from_slice(&[0.5f32, 0.5, 0.5, 0.5]).view([2, 2]);
        for _ in 0..2 {
            adamw.zero_grad();
            (&w * &target).sum(Kind::Float).backward();
            adamw.step(0.01).unwrap();
        }
        // The gradient is 0.5 everywhere, so m_hat = 0.5 and v_hat = 0.25
        // after each step, and each update is lr * (1 + wd * w) nearly.
        let expected: Vec<f64> = [1.0f64, -2.0, 3.0, 0.5]
            .iter()
            .map(|&w0| {
                let mut w = w0;
                for _ in 0..2 {
                    w *= 1.0 - 0.01 * 0.1;
                    w -= 0.01 * 0.5 / (0.5 + 1e-8);
                }
                w
            })
            .collect();
        let got: Vec<f64> = Vec::try_from(w.to_kind(Kind::Double).view([-1])).unwrap();
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn clipping_bounds_global_norm() {
        let vs = VarStore::new(Device::Cpu);
        let a = vs.root().var_copy("a", &Tensor::from_slice(&[3.0f32]));
        let b = vs.root().var_copy("b", &Tensor::from_slice(&[4.0f32]));
        let mut adamw = AdamW::new(&vs, &TrainOptions::default()).unwrap();
        ((&a * &a + &b * &b) * 0.5).sum(Kind::Float).backward();
        let norm = adamw.clip_grad_norm(1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let clipped = (a.grad().pow_tensor_scalar(2) + b.grad().pow_tensor_scalar(2))
            .sqrt()
            .double_value(&[0]);
        assert!((clipped - 1.0).abs() < 1e-4, "{clipped}");
    }

    /// Fits y = 3x - 1 with a linear layer.
    struct Line {
        layer: nn::Linear,
        /// Fails at this step, as a killed process would stop.
        fail_at: Option<u64>,
    }

    impl Task for Line {
        fn train_loss(&mut self, step: u64) -> Result<Tensor> {
            if self.fail_at == Some(step) {
                return Err(Error::InvalidInput("interrupted".into()));
            }
            let x = Tensor::arange(8, (Kind::Float, Device::Cpu)).view([8, 1]) / 8.0
                + (step % 3) as f64;
            let y = &x * 3.0 - 1.0;
            Ok(nn::Module::forward(&self.layer, &x).mse_loss(&y, tch::Reduction::Mean))
        }
        fn eval_loss(&mut self) -> Result<f64> {
            let _guard = tch::no_grad_guard();
            let x = Tensor::from_slice(&[0.5f32, 1.5]).view([2, 1]);
            Ok(nn::Module::forward(&self.layer, &x)
                .mse_loss(&(&x * 3.0 - 1.0), tch::Reduction::Mean)
                .double_value(&[]))
        }
        fn items_per_step(&self) -> u64 {
            8
        }
        fn export(&self, _vs: &VarStore, dir: &Path) -> Result<()> {
            checkpoint::write_atomic(&dir.join("exported"), b"ok")
        }
    }

    fn line() -> (VarStore, Line) {
        // Fixed initial values: the global seed is shared with other tests.
        let vs = VarStore::new(Device::Cpu);
        let config = nn::LinearConfig {
            ws_init: nn::Init::Const(0.5),
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let layer = nn::linear(vs.root() / "line", 1, 1, config);
        (
            vs,
            Line {
                layer,
                fail_at: None,
            },
        )
    }

    fn options(steps: u64) -> TrainOptions {
        TrainOptions {
            steps,
            learning_rate: 0.2,
            min_learning_rate: 0.02,
            warmup_steps: 5,
            weight_decay: 0.0,
            eval_every: 10,
            checkpoint_every: 10,
            ..Default::default()
        }
    }

    #[test]
    fn resumed_run_equals_uninterrupted_run() {
        let whole = tempfile::tempdir().unwrap();
        let (mut vs, mut task) = line();
        let report = train(&mut vs, &mut task, &options(40), whole.path(), false).unwrap();
        let first = report.evaluations.first().unwrap().eval_loss;
        let last = report.evaluations.last().unwrap().eval_loss;
        assert!(last < first * 0.25, "loss {first} -> {last}");
        assert!(whole.path().join("exported").is_file());

        let split = tempfile::tempdir().unwrap();
        let (mut vs2, mut task2) = line();
        task2.fail_at = Some(25);
        let err = train(&mut vs2, &mut task2, &options(40), split.path(), false).unwrap_err();
        assert!(err.to_string().contains("interrupted"));
        assert_eq!(saved_step(split.path()).unwrap(), Some(20));
        let (mut vs3, mut task3) = line();
        let resumed = train(&mut vs3, &mut task3, &options(40), split.path(), true).unwrap();
        assert_eq!(resumed.start_step, 20);
        assert_eq!(resumed.evaluations.len(), report.evaluations.len());
        for (r, e) in resumed.evaluations.iter().zip(&report.evaluations) {
            assert_eq!(r.step, e.step);
            assert!((r.train_loss - e.train_loss).abs() < 1e-6, "{r:?} vs {e:?}");
            assert!((r.eval_loss - e.eval_loss).abs() < 1e-6, "{r:?} vs {e:?}");
        }
        let a = task.layer.ws.double_value(&[0, 0]);
        let b = task3.layer.ws.double_value(&[0, 0]);
        assert!((a - b).abs() < 1e-6, "uninterrupted {a}, resumed {b}");
    }

    #[test]
    fn existing_state_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (mut vs, mut task) = line();
        train(&mut vs, &mut task, &options(10), dir.path(), false).unwrap();
        let err = train(&mut vs, &mut task, &options(10), dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("at step 10"), "{err}");
        let err = train(&mut vs, &mut task, &options(10), dir.path(), true).unwrap_err();
        assert!(err.to_string().contains("10 of 10"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = train(&mut vs, &mut task, &options(10), empty.path(), true).unwrap_err();
        assert!(err.to_string().contains("nothing to resume"), "{err}");
    }

    #[test]
    fn bad_options_are_named() {
        let err = TrainOptions {
            learning_rate: -1.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("-1"), "{err}");
        let err = TrainOptions {
            steps: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("steps"), "{err}");
    }
}
