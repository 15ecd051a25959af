"""Write the parity fixtures of the DDPM and DDIM schedulers of the `diffusion` crate.

The reference is `DDPMScheduler` and `DDIMScheduler` of diffusers 0.42.1. All
random tensors come from seeded `torch.Generator`s. The script writes these
files under diffusion/tests/fixtures/:

- schedulers.safetensors: the shared step inputs, which are samples, model
  outputs and noise of shape (2, 3, 4, 4). It also contains the betas and
  alphas_cumprod of each schedule, the outputs of `add_noise` and
  `get_velocity`, the outputs of `step` (prev_sample, pred_original_sample)
  for every case, and the samples of whole sampling loops.
- scheduler_cases.json: the configuration of every case (only the keys that
  differ from the class defaults, so the Rust defaults are tested as well),
  the timesteps, and the tensor names of the inputs and expected outputs.
- scheduler_ddpm_default.json, scheduler_ddim_default.json: the `config` of a
  default-constructed scheduler as diffusers serializes it.
- scheduler_ddim_stable_diffusion.json: a scheduler config in the style of
  Stable Diffusion 1.x, with keys that DDIM does not use.

Two cases differ from plain diffusers output, and the JSON marks them:

- `variance_type="fixed_large_log"`: diffusers 0.42.1 takes the square root of
  the log-variance `log(beta_t)` in `DDPMScheduler.step`, so every step with
  t > 0 returns NaN. The script checks that, and stores the output of
  `fixed_large` (standard deviation sqrt(beta_t)) as the expected value.
- "trailing" spacing: for some step counts (61 of 1000, for example)
  `np.arange` returns one element too many and diffusers appends the timestep
  -1. The timestep lists are stored as diffusers returns them.

Run from the repository root after `bash scripts/setup.sh`:

    ~/.cache/modelzoo/venv/bin/python reference/ddpm_schedulers.py
"""

import json
import random
from pathlib import Path

import diffusers
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "diffusion" / "tests" / "fixtures"
SHAPE = (2, 3, 4, 4)
NUM_INPUTS = 4
INPUT_SEED = 0
NOISE_SEED = 1000
CHAIN_SEED = 2000
SUBSET_SEED = 3000
LEARNED = ("learned", "learned_range")

SCALED_LINEAR = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
COSINE = {"beta_schedule": "squaredcos_cap_v2"}
ZERO_SNR_V_TRAILING = {
    **SCALED_LINEAR,
    "rescale_betas_zero_snr": True,
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
}
STABLE_DIFFUSION_DDIM = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
TRAINED_BETAS = [0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5]

tensors: dict[str, torch.Tensor] = {}


def put(name: str, tensor: torch.Tensor) -> str:
    assert name not in tensors, name
    tensors[name] = tensor.detach().contiguous().clone()
    return name


def make_inputs() -> None:
    g = torch.Generator().manual_seed(INPUT_SEED)
    for k in range(NUM_INPUTS):
        sample = torch.randn(SHAPE, generator=g) * 1.5
        model_output = torch.randn(SHAPE, generator=g)
        # "learned": the model predicts the variance itself, so it is positive.
        learned = torch.rand(SHAPE, generator=g) * 0.02 + 1e-4
        # "learned_range": an interpolation weight in [-1, 1].
        learned_range = torch.rand(SHAPE, generator=g) * 2 - 1
        put(f"input.sample.{k}", sample)
        put(f"input.model_output.{k}", model_output)
        put(f"input.model_output_learned.{k}", torch.cat([model_output, learned], dim=1))
        put(f"input.model_output_learned_range.{k}", torch.cat([model_output, learned_range], dim=1))
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(NOISE_SEED + k))
        put(f"input.noise.{k}", noise)


def scheduler_class(kind: str):
    return DDPMScheduler if kind == "ddpm" else DDIMScheduler


def build(kind: str, config: dict):
    return scheduler_class(kind).from_config(dict(config))


def model_output_name(kind: str, config: dict, k: int) -> str:
    variance_type = config.get("variance_type", "fixed_small")
    if kind == "ddpm" and variance_type in LEARNED:
        return f"input.model_output_{variance_type}.{k}"
    return f"input.model_output.{k}"


def choose_timesteps(timesteps: list[int], rng: random.Random, count: int = 6) -> list[int]:
    """First, second, middle, last two and one random timestep, in sampling order."""
    if len(timesteps) <= count:
        return list(timesteps)
    indices = {0, 1, len(timesteps) // 2, len(timesteps) - 2, len(timesteps) - 1}
    indices.add(rng.randrange(len(timesteps)))
    return [timesteps[i] for i in sorted(indices)]


def run_step(kind, scheduler, model_output, t, sample, k, eta, use_clipped):
    if kind == "ddpm":
        # DDPMScheduler draws its noise from the generator, which then yields
        # exactly input.noise.{k}.
        generator = torch.Generator().manual_seed(NOISE_SEED + k)
        return scheduler.step(model_output, t, sample, generator=generator)
    return scheduler.step(
        model_output,
        t,
        sample,
        eta=eta,
        use_clipped_model_output=use_clipped,
        variance_noise=tensors[f"input.noise.{k}"],
    )


cases: list[dict] = []


def add_case(
    kind: str,
    config: dict,
    num_inference_steps: int | None,
    custom_timesteps: list[int] | None = None,
    eta: float = 0.0,
    use_clipped_model_output: bool = False,
    all_timesteps: bool = False,
) -> None:
    index = len(cases)
    name = f"{index:03d}_{kind}"
    rng = random.Random(SUBSET_SEED + index)
    scheduler = build(kind, config)
    if custom_timesteps is not None:
        scheduler.set_timesteps(timesteps=custom_timesteps)
    elif num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps.tolist()
    chosen = timesteps if all_timesteps else choose_timesteps(timesteps, rng)

    note = None
    reference = scheduler
    if config.get("variance_type") == "fixed_large_log":
        reference = build(kind, {**config, "variance_type": "fixed_large"})
        if custom_timesteps is not None:
            reference.set_timesteps(timesteps=custom_timesteps)
        elif num_inference_steps is not None:
            reference.set_timesteps(num_inference_steps)
        note = "diffusers returns NaN for fixed_large_log at t > 0; expected values are those of fixed_large"

    steps = []
    for j, t in enumerate(chosen):
        k = (index + j) % NUM_INPUTS
        sample = tensors[f"input.sample.{k}"]
        model_output = tensors[model_output_name(kind, config, k)]
        out = run_step(kind, scheduler, model_output, t, sample, k, eta, use_clipped_model_output)
        if note is not None:
            if t > 0:
                assert torch.isnan(out.prev_sample).all(), "fixed_large_log no longer returns NaN"
            out = run_step(kind, reference, model_output, t, sample, k, eta, use_clipped_model_output)
        assert torch.isfinite(out.prev_sample).all(), (name, t)
        steps.append(
            {
                "timestep": t,
                "input": k,
                "prev_sample": put(f"case.{name}.{t}.prev_sample", out.prev_sample),
                "pred_original_sample": put(
                    f"case.{name}.{t}.pred_original_sample", out.pred_original_sample
                ),
            }
        )
    case = {
        "name": name,
        "scheduler": kind,
        "config": config,
        "num_inference_steps": num_inference_steps,
        "custom_timesteps": custom_timesteps,
        "eta": eta,
        "use_clipped_model_output": use_clipped_model_output,
        "timesteps": timesteps,
        "steps": steps,
    }
    if note is not None:
        case["note"] = note
    cases.append(case)


def ddpm_cases() -> None:
    # Every variance type with every prediction type, all ten steps.
    for variance_type in ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", *LEARNED):
        for prediction_type in ("epsilon", "sample", "v_prediction"):
            config = {"variance_type": variance_type, "prediction_type": prediction_type}
            add_case("ddpm", config, 10, all_timesteps=True)

    # Each beta schedule, clipping off, so that large x_0 predictions show.
    for schedule in ({}, SCALED_LINEAR, COSINE, {"beta_schedule": "sigmoid"}):
        add_case("ddpm", {**schedule, "clip_sample": False}, 50)
    trained = {"num_train_timesteps": 10, "trained_betas": TRAINED_BETAS, "clip_sample": False}
    add_case("ddpm", trained, 10, all_timesteps=True)
    add_case("ddpm", ZERO_SNR_V_TRAILING, 25)

    # Spacings and step counts, with the variance type and schedule varied.
    variance_types = ["fixed_small", "fixed_large", "fixed_small_log", "learned_range"]
    schedules = [{}, COSINE, SCALED_LINEAR]
    i = 0
    for spacing in ("leading", "trailing", "linspace"):
        for steps in (1, 10, 50, 1000):
            config = {
                **schedules[i % len(schedules)],
                "timestep_spacing": spacing,
                "variance_type": variance_types[i % len(variance_types)],
                "clip_sample": i % 2 == 0,
            }
            add_case("ddpm", config, steps)
            i += 1

    # Offsets, clipping ranges, thresholding and a short schedule.
    add_case("ddpm", {"steps_offset": 1}, 50)
    add_case("ddpm", {"clip_sample_range": 2.0}, 20)
    add_case("ddpm", {"thresholding": True, "sample_max_value": 1.5}, 20)
    thresholded_v = {
        "thresholding": True,
        "dynamic_thresholding_ratio": 0.9,
        "sample_max_value": 3.0,
        "prediction_type": "v_prediction",
    }
    add_case("ddpm", thresholded_v, 20)
    add_case("ddpm", {"num_train_timesteps": 50, **COSINE, "clip_sample": False}, 50)

    # No set_timesteps: diffusers steps from t to t - 1.
    add_case("ddpm", {}, None)
    add_case("ddpm", {}, None, custom_timesteps=[999, 700, 400, 100, 10, 0], all_timesteps=True)
    fixed_large = {"variance_type": "fixed_large"}
    add_case("ddpm", fixed_large, None, custom_timesteps=[950, 500, 3], all_timesteps=True)


def ddim_cases() -> None:
    for prediction_type in ("epsilon", "sample", "v_prediction"):
        for eta in (0.0, 1.0):
            for clip in (True, False):
                config = {"prediction_type": prediction_type, "clip_sample": clip}
                add_case("ddim", config, 10 if clip else 50, eta=eta)

    # use_clipped_model_output with clipping and thresholding.
    add_case("ddim", {"prediction_type": "sample"}, 20, eta=0.5, use_clipped_model_output=True)
    add_case("ddim", {"clip_sample_range": 0.5}, 20, eta=0.5, use_clipped_model_output=True)
    thresholded = {"thresholding": True, "sample_max_value": 2.0}
    add_case("ddim", thresholded, 20, eta=0.3, use_clipped_model_output=True)

    # Spacings and step counts, with the schedule and set_alpha_to_one varied.
    schedules = [{}, COSINE, SCALED_LINEAR]
    i = 0
    for spacing in ("leading", "trailing", "linspace"):
        for steps in (1, 10, 50, 1000):
            config = {
                **schedules[i % len(schedules)],
                "timestep_spacing": spacing,
                "set_alpha_to_one": i % 2 == 0,
                "clip_sample": i % 3 == 0,
            }
            add_case("ddim", config, steps, eta=(0.0, 1.0, 0.5)[i % 3])
            i += 1

    # Stable Diffusion's config, the cosine and zero-SNR schedules, and trained betas.
    add_case("ddim", STABLE_DIFFUSION_DDIM, 50)
    add_case("ddim", {**COSINE, "clip_sample": False}, 50, eta=1.0)
    add_case(
        "ddim",
        ZERO_SNR_V_TRAILING,
        25,
        # With eta = 1, 1 - alpha_prod_t_prev - std_dev_t**2 is zero at t = 999
        # and rounds below zero in float32, so diffusers returns NaN there.
        eta=0.5,
    )
    add_case("ddim", {"num_train_timesteps": 10, "trained_betas": TRAINED_BETAS}, 5, all_timesteps=True)


chains: list[dict] = []


def chain_model(sample: torch.Tensor) -> torch.Tensor:
    """Return a fixed stand-in for a denoiser's output, which the Rust test repeats."""
    return sample * 0.7 + tensors["input.model_output.0"] * 0.3


def add_chain(name: str, kind: str, config: dict, num_inference_steps: int, eta: float = 0.0) -> None:
    """A whole sampling loop whose noise comes from one seeded generator."""
    scheduler = build(kind, config)
    scheduler.set_timesteps(num_inference_steps)
    generator = torch.Generator().manual_seed(CHAIN_SEED)
    sample = torch.randn(SHAPE, generator=generator)
    samples = []
    for t in scheduler.timesteps.tolist():
        model_output = chain_model(sample)
        if kind == "ddpm":
            out = scheduler.step(model_output, t, sample, generator=generator)
        else:
            out = scheduler.step(model_output, t, sample, eta=eta, generator=generator)
        sample = out.prev_sample
        samples.append(sample)
    chains.append(
        {
            "name": name,
            "scheduler": kind,
            "config": config,
            "num_inference_steps": num_inference_steps,
            "eta": eta,
            "seed": CHAIN_SEED,
            "samples": put(f"chain.{name}.samples", torch.stack(samples)),
            "pred_original_sample": put(f"chain.{name}.pred_original_sample", out.pred_original_sample),
        }
    )


schedules: list[dict] = []
SCHEDULES = {
    "linear": {},
    "scaled_linear": SCALED_LINEAR,
    "squaredcos_cap_v2": COSINE,
    "squaredcos_cap_v2_50": {**COSINE, "num_train_timesteps": 50},
    "squaredcos_cap_v2_4000": {**COSINE, "num_train_timesteps": 4000},
    "sigmoid": {"beta_schedule": "sigmoid"},
    "linear_1": {"num_train_timesteps": 1},
    "linear_zero_snr": {"rescale_betas_zero_snr": True},
    "scaled_linear_zero_snr": {**SCALED_LINEAR, "rescale_betas_zero_snr": True},
    "trained": {"num_train_timesteps": 10, "trained_betas": TRAINED_BETAS},
}


def add_schedules() -> None:
    for name, config in SCHEDULES.items():
        scheduler = DDPMScheduler.from_config(dict(config))
        assert scheduler.betas.dtype == torch.float32
        assert scheduler.alphas_cumprod.dtype == torch.float32
        schedules.append(
            {
                "name": name,
                "config": config,
                "betas": put(f"schedule.{name}.betas", scheduler.betas),
                "alphas_cumprod": put(f"schedule.{name}.alphas_cumprod", scheduler.alphas_cumprod),
            }
        )


noising: list[dict] = []


def add_noising() -> None:
    original = tensors["input.sample.0"]
    noise = tensors["input.noise.0"]
    for name in ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "linear_zero_snr"):
        for timesteps in ([0, 999], [17, 500], [500]):
            for dtype in (torch.float32, torch.float64):
                scheduler = DDPMScheduler.from_config(dict(SCHEDULES[name]))
                x0 = original.to(dtype)
                eps = noise.to(dtype)
                ts = torch.tensor(timesteps, dtype=torch.int64)
                key = f"noising.{name}.{'_'.join(map(str, timesteps))}.{str(dtype).removeprefix('torch.')}"
                noising.append(
                    {
                        "schedule": name,
                        "config": SCHEDULES[name],
                        "timesteps": timesteps,
                        "dtype": str(dtype).removeprefix("torch."),
                        "add_noise": put(f"{key}.add_noise", scheduler.add_noise(x0, eps, ts)),
                        "velocity": put(f"{key}.velocity", scheduler.get_velocity(x0, eps, ts)),
                    }
                )


def timestep_lists() -> list[dict]:
    lists = []
    step_counts = {
        1000: [1, 2, 3, 7, 10, 25, 50, 61, 99, 100, 103, 250, 333, 500, 999, 1000],
        10: [1, 3, 4, 7, 9, 10],
        7: [1, 2, 3, 5, 6, 7],
        1: [1],
    }
    for num_train_timesteps, counts in step_counts.items():
        for spacing in ("leading", "trailing", "linspace"):
            for steps_offset in (0, 1) if spacing == "leading" else (0,):
                config = {
                    "num_train_timesteps": num_train_timesteps,
                    "timestep_spacing": spacing,
                    "steps_offset": steps_offset,
                }
                for n in counts:
                    ddpm = DDPMScheduler.from_config(dict(config))
                    ddim = DDIMScheduler.from_config(dict(config))
                    ddpm.set_timesteps(n)
                    ddim.set_timesteps(n)
                    assert torch.equal(ddpm.timesteps, ddim.timesteps)
                    timesteps = ddpm.timesteps.tolist()
                    lists.append({"config": config, "num_inference_steps": n, "timesteps": timesteps})
    return lists


def main() -> None:
    assert diffusers.__version__ == "0.42.1", diffusers.__version__
    OUT.mkdir(parents=True, exist_ok=True)
    make_inputs()
    ddpm_cases()
    ddim_cases()
    add_chain("ddpm_linear_20", "ddpm", {}, 20)
    cosine_v_trailing = {
        **COSINE,
        "prediction_type": "v_prediction",
        "timestep_spacing": "trailing",
        "variance_type": "fixed_large",
    }
    add_chain("ddpm_cosine_v_trailing_10", "ddpm", cosine_v_trailing, 10)
    add_chain("ddim_stable_diffusion_50", "ddim", STABLE_DIFFUSION_DDIM, 50)
    add_chain("ddim_eta_1_linspace_20", "ddim", {"timestep_spacing": "linspace"}, 20, eta=1.0)
    add_schedules()
    add_noising()

    save_file(tensors, OUT / "schedulers.safetensors")
    document = {
        "diffusers_version": diffusers.__version__,
        "shape": list(SHAPE),
        "num_inputs": NUM_INPUTS,
        "noise_seed": NOISE_SEED,
        "cases": cases,
        "chains": chains,
        "schedules": schedules,
        "noising": noising,
        "timestep_lists": timestep_lists(),
    }
    (OUT / "scheduler_cases.json").write_text(json.dumps(document, separators=(",", ":")) + "\n")
    (OUT / "scheduler_ddpm_default.json").write_text(DDPMScheduler().to_json_string())
    (OUT / "scheduler_ddim_default.json").write_text(DDIMScheduler().to_json_string())
    stable_diffusion = json.dumps(STABLE_DIFFUSION_DDIM, indent=2) + "\n"
    (OUT / "scheduler_ddim_stable_diffusion.json").write_text(stable_diffusion)
    size = (OUT / "schedulers.safetensors").stat().st_size
    print(f"{len(cases)} cases, {len(chains)} chains, {len(tensors)} tensors, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
