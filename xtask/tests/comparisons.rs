//! Architectures side by side on the same input, checking the relations
//! that the papers state between them.

use common::nn::{layer_norm, silu, RmsNorm};
use tch::nn::{Module, VarStore};
use tch::{Device, Kind, Tensor};

const EPS: f64 = 1e-5;

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Double, Device::Cpu))
}

/// Copies `value` into the variable `name` of `vs`.
fn set(vs: &VarStore, name: &str, value: &Tensor) {
    let variables = vs.variables();
    let mut variable = variables[name].shallow_clone();
    tch::no_grad(|| variable.copy_(value));
}

/// Returns the number of weights of the matrices whose names contain
/// `part`: biases and norm gains are left out.
fn matrix_weights(vs: &VarStore, part: &str) -> i64 {
    vs.variables()
        .iter()
        .filter(|(name, t)| name.contains(part) && t.dim() == 2)
        .map(|(_, t)| t.numel() as i64)
        .sum()
}

/// RMSNorm is LayerNorm without the mean subtraction and the bias (Zhang and
/// Sennrich, 2019): on inputs of zero mean, with zero bias, they agree.
#[test]
fn layer_norm_equals_rms_norm_on_zero_mean_input() {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let ln = layer_norm(vs.root() / "ln", 16, EPS);
    let rms = RmsNorm::new(vs.root() / "rms", 16, EPS);
    let gain = Tensor::rand([16], (Kind::Float, Device::Cpu)) + 0.5;
    set(&vs, "ln.weight", &gain);
    set(&vs, "rms.weight", &gain);
    let xs = randn(&[4, 16]).to_kind(Kind::Float);
    let centred = &xs - xs.mean_dim(-1, true, Kind::Float);
    let (a, b) = (ln.forward(&centred), rms.forward(&centred));
    assert!(a.allclose(&b, 1e-5, 1e-5, false));
    // With a mean, they differ.
    let shifted = &centred + 1.0;
    assert!(!ln
        .forward(&shifted)
        .allclose(&rms.forward(&shifted), 1e-3, 1e-3, false));
}

/// SiLU (Hendrycks and Gimpel, 2016) is Swish (Ramachandran et al., 2017)
/// with beta 1: `x * sigmoid(beta * x)`.
#[test]
fn silu_is_swish_with_beta_one() {
    let xs = Tensor::linspace(-8.0, 8.0, 161, (Kind::Double, Device::Cpu));
    let swish = |beta: f64| &xs * (&xs * beta).sigmoid();
    assert!(silu(&xs).allclose(&swish(1.0), 1e-12, 1e-12, false));
    assert!(!silu(&xs).allclose(&swish(1.702), 1e-3, 1e-3, false));
}

/// Shazeer (2020) shrinks the hidden size of a SwiGLU feed-forward layer to
/// 2/3 of 4d, so that its three matrices hold as many weights as the two of
/// a 4d GELU layer: 3 * d * (8d / 3) = 2 * d * 4d.
#[test]
fn swiglu_at_two_thirds_has_the_weights_of_a_gelu_mlp() {
    let d = 96;
    let mut llama_config = llama::Config::llama2_7b();
    llama_config.hidden_size = d;
    llama_config.intermediate_size = 2 * 4 * d / 3;
    llama_config.num_layers = 1;
    llama_config.num_heads = 4;
    llama_config.num_kv_heads = 4;
    llama_config.head_dim = d / 4;
    llama_config.vocab_size = 32;
    let llama_vs = VarStore::new(Device::Cpu);
    llama::Llama::new(&llama_vs.root(), &llama_config).unwrap();

    let mut gpt_config = gpt::Config::gpt2_124m();
    gpt_config.hidden_size = d;
    gpt_config.intermediate_size = 4 * d;
    gpt_config.num_layers = 1;
    gpt_config.num_heads = 4;
    gpt_config.head_dim = d / 4;
    gpt_config.vocab_size = 32;
    gpt_config.attention_layers.truncate(1);
    let gpt_vs = VarStore::new(Device::Cpu);
    gpt::Gpt::new(&gpt_vs.root(), &gpt_config).unwrap();

    let swiglu = matrix_weights(&llama_vs, ".mlp.");
    let gelu = matrix_weights(&gpt_vs, ".mlp.");
    assert_eq!(swiglu, 3 * d * (8 * d / 3));
    assert_eq!(gelu, 2 * d * 4 * d);
    assert_eq!(swiglu, gelu);
}

fn tiny_llama(kv_heads: i64) -> llama::Config {
    let mut config = llama::Config::llama2_7b();
    config.hidden_size = 64;
    config.intermediate_size = 128;
    config.num_layers = 2;
    config.num_heads = 8;
    config.num_kv_heads = kv_heads;
    config.head_dim = 8;
    config.vocab_size = 50;
    config
}

/// Grouped-query attention (Ainslie et al., 2023) with `g` KV heads equals
/// multi-head attention whose KV heads are copies, `heads / g` of each. Its
/// KV cache is `heads / g` times smaller. With `g = 1` it is multi-query
/// attention (Shazeer, 2019).
#[test]
fn grouped_query_attention_is_multi_head_with_copied_kv_heads() {
    let ids = Tensor::from_slice(&[3i64, 14, 15, 9, 26, 5, 35, 8]).unsqueeze(0);
    let (heads, head_dim) = (8, 8);
    tch::manual_seed(1);
    let mha_config = tiny_llama(heads);
    let mha_vs = VarStore::new(Device::Cpu);
    let mha = llama::Llama::new(&mha_vs.root(), &mha_config).unwrap();
    let mut mha_cache = mha.new_cache();
    let _ = mha.forward(&ids, &mut mha_cache).unwrap();

    for kv_heads in [4, 2, 1] {
        let config = tiny_llama(kv_heads);
        let vs = VarStore::new(Device::Cpu);
        let gqa = llama::Llama::new(&vs.root(), &config).unwrap();
        // The multi-head model takes the grouped model's weights, each KV
        // head repeated for the query heads that share it.
        for (name, tensor) in vs.variables() {
            let value = if name.contains(".k_proj.") || name.contains(".v_proj.") {
                tensor
                    .view([kv_heads, head_dim, -1])
                    .repeat_interleave_self_int(heads / kv_heads, 0, None)
                    .view([heads * head_dim, -1])
            } else {
                tensor
            };
            set(&mha_vs, &name, &value);
        }
        let mut gqa_cache = gqa.new_cache();
        let mut mha_cache = mha.new_cache();
        let grouped = gqa.forward(&ids, &mut gqa_cache).unwrap();
        let multi_head = mha.forward(&ids, &mut mha_cache).unwrap();
        assert!(
            grouped.allclose(&multi_head, 1e-5, 1e-5, false),
            "{kv_heads} KV heads"
        );
        assert_eq!(
            mha_cache.bytes(),
            gqa_cache.bytes() * (heads / kv_heads) as usize,
            "{kv_heads} KV heads"
        );
    }
    // Llama 2 70B: 64 query heads over 8 KV heads, 8 times less cache.
    let (mha_70b, gqa_70b) = (
        llama::Config {
            num_kv_heads: 64,
            ..llama::Config::llama2_70b()
        },
        llama::Config::llama2_70b(),
    );
    let per_token = |c: &llama::Config| 2 * c.num_layers * c.num_kv_heads * c.head_dim * 2;
    assert_eq!(per_token(&gqa_70b), 327_680);
    assert_eq!(per_token(&mha_70b) / per_token(&gqa_70b), 8);
}

fn tiny_gpt(banded: bool, window: i64) -> gpt::Config {
    let mut config = gpt::Config::gpt3_125m();
    config.hidden_size = 32;
    config.intermediate_size = 128;
    config.num_layers = 4;
    config.num_heads = 4;
    config.head_dim = 8;
    config.vocab_size = 40;
    config.context_length = 32;
    config.window_size = window;
    config.attention_layers = (0..4)
        .map(|i| {
            if banded && i % 2 == 1 {
                gpt::AttentionKind::Banded
            } else {
                gpt::AttentionKind::Dense
            }
        })
        .collect();
    config
}

/// GPT-3's locally banded layers (Brown et al., 2020, after Child et al.,
/// 2019) equal dense layers when the window covers the whole context, and
/// differ when it does not.
#[test]
fn banded_layer_equals_dense_when_window_covers_context() {
    let ids = Tensor::arange(20, (Kind::Int64, Device::Cpu))
        .remainder(37)
        .unsqueeze(0);
    tch::manual_seed(2);
    let dense_vs = VarStore::new(Device::Cpu);
    let dense = gpt::Gpt::new(&dense_vs.root(), &tiny_gpt(false, 32)).unwrap();
    let expected = dense.forward(&ids, &mut dense.new_cache()).unwrap();
    for (window, equal) in [(32, true), (20, true), (8, false)] {
        let vs = VarStore::new(Device::Cpu);
        let banded = gpt::Gpt::new(&vs.root(), &tiny_gpt(true, window)).unwrap();
        for (name, tensor) in dense_vs.variables() {
            set(&vs, &name, &tensor);
        }
        let logits = banded.forward(&ids, &mut banded.new_cache()).unwrap();
        assert_eq!(
            logits.allclose(&expected, 1e-5, 1e-5, false),
            equal,
            "window {window}"
        );
    }
}

/// Returns the gradient norms of the feed-forward output projection of
/// every layer at initialisation, for a next-token loss on random tokens.
/// Every matrix is drawn from normal(0, 0.02), without GPT-2's depth scaling
/// of the residual projections, as in the analysis of Xiong et al. (2020).
fn layer_gradient_norms(layout: gpt::Layout, layers: i64) -> Vec<f64> {
    let mut config = gpt::Config::gpt2_124m();
    config.layout = layout;
    config.hidden_size = 64;
    config.intermediate_size = 256;
    config.num_layers = layers;
    config.num_heads = 4;
    config.head_dim = 16;
    config.vocab_size = 64;
    config.context_length = 32;
    config.dropout = 0.0;
    config.attention_layers = vec![gpt::AttentionKind::Dense; layers as usize];

    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let model = gpt::Gpt::new(&vs.root(), &config).unwrap();
    for (name, tensor) in vs.variables() {
        if name.ends_with("c_proj.weight") {
            set(&vs, &name, &(Tensor::randn_like(&tensor) * 0.02));
        }
    }

    let ids = Tensor::randint(64, [8, 32], (Kind::Int64, Device::Cpu));
    let logits = model.forward(&ids, &mut model.new_cache()).unwrap();
    let loss = logits
        .narrow(1, 0, 31)
        .reshape([-1, 64])
        .cross_entropy_for_logits(&ids.narrow(1, 1, 31).reshape([-1]));
    loss.backward();
    let variables = vs.variables();
    (0..layers)
        .map(|i| {
            let name = format!("transformer.h.{i}.mlp.c_proj.weight");
            variables[&name].grad().norm().double_value(&[])
        })
        .collect()
}

/// Xiong et al. (2020) show that at initialisation the gradient of the last
/// layer of a pre-norm transformer (GPT-2's placement) shrinks as
/// `1 / sqrt(layers)`. The final LayerNorm divides by a residual stream
/// that grows with depth. The gradient of a post-norm transformer (GPT-1's
/// placement) does not depend on depth. Run with `--nocapture` to
/// see the table.
#[test]
fn pre_norm_gradient_shrinks_with_depth() {
    let depths = [2, 6, 12, 24];
    let mut last = Vec::new();
    eprintln!("layers | post-norm last-layer gradient | pre-norm last-layer gradient");
    for layers in depths {
        let post = layer_gradient_norms(gpt::Layout::OpenAiGpt, layers);
        let pre = layer_gradient_norms(gpt::Layout::Gpt2, layers);
        let (post, pre) = (post[post.len() - 1], pre[pre.len() - 1]);
        eprintln!("{layers:>6} | {post:>29.4} | {pre:>28.4}");
        last.push((post, pre));
    }
    for pair in last.windows(2) {
        assert!(pair[1].1 < pair[0].1, "pre-norm gradients {last:?}");
    }
    let (post_ratio, pre_ratio) = (last[3].0 / last[0].0, last[3].1 / last[0].1);
    // From 2 to 24 layers, 1 / sqrt(layers) predicts a ratio of 0.29.
    assert!(
        (0.2..0.45).contains(&pre_ratio),
        "pre-norm ratio {pre_ratio}"
    );
    assert!(
        (0.8..1.25).contains(&post_ratio),
        "post-norm ratio {post_ratio}"
    );
}
