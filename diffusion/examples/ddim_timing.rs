//! Times the U-Net passes of a 50-step DDIM sample one by one, beside
//! passes on a fixed input, for the ddpm-cifar10-32 U-Net with random
//! weights at batch 1 on 2 threads. It separates the cost of the sampling
//! loop from drift in the machine's speed:
//!
//! ```sh
//! cargo run --release -p diffusion --example ddim_timing
//! ```

use diffusion::scheduler::{DdimScheduler, DdimStepOptions, SchedulerConfig};
use diffusion::{Config, UNet2DModel};
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

const FIXED_PASSES: u32 = 10;

fn main() -> common::Result<()> {
    tch::set_num_threads(2);
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let unet = UNet2DModel::new(&vs.root(), &Config::ddpm_cifar10_32())?;
    let mut scheduler = DdimScheduler::new(SchedulerConfig::default())?;
    scheduler.set_timesteps(50)?;
    let noise = Tensor::f_randn([1, 3, 32, 32], (Kind::Float, Device::Cpu))?;
    let options = DdimStepOptions {
        eta: 0.0,
        use_clipped_model_output: false,
    };
    let timestep = Tensor::from(500i64);
    tch::no_grad(|| -> common::Result<()> {
        let _warmup = unet.forward(&noise, &timestep, false)?;
        for round in 1..=2 {
            let start = Instant::now();
            for _ in 0..FIXED_PASSES {
                let _output = unet.forward(&noise, &timestep, false)?;
            }
            let fixed_ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(FIXED_PASSES);

            let (mut forward_s, mut step_s) = (0.0, 0.0);
            let mut sample = noise.shallow_clone();
            for &t in scheduler.timesteps() {
                let start = Instant::now();
                let output = unet.forward(&sample, &Tensor::from(t), false)?;
                let forward_end = Instant::now();
                sample = scheduler
                    .step(&output, t, &sample, options, None)?
                    .prev_sample;
                forward_s += (forward_end - start).as_secs_f64();
                step_s += forward_end.elapsed().as_secs_f64();
            }
            let steps = scheduler.timesteps().len() as f64;
            println!(
                "round {round}: fixed input {fixed_ms:.1} ms per pass; DDIM sample {:.1} ms \
                 per U-Net pass and {:.3} ms per scheduler step",
                forward_s * 1e3 / steps,
                step_s * 1e3 / steps
            );
        }
        Ok(())
    })
}
