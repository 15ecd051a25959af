//! Bad input to the gpt crate: each case is an error that names the value at
//! fault, never a panic or a libtorch abort.

use gpt::train::{Example, LanguageModelTask};
use gpt::{Config, Gpt, MultipleChoice, SequenceClassifier};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Copies the gpt2 fixture into a temporary directory with `edit` applied to
/// its config.json.
fn edited_gpt2(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture("gpt2");
    std::fs::copy(
        source.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(source.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    Gpt::load(dir, Device::Cpu, Kind::Float)
        .unwrap_err()
        .to_string()
}

fn tiny() -> Gpt {
    Gpt::load(&fixture("gpt2"), Device::Cpu, Kind::Float).unwrap()
}

#[test]
fn checkpoint_with_other_shapes_is_named() {
    // Fewer positions than stored: the embedding's shape differs.
    let dir = edited_gpt2(|c| c["n_positions"] = 16.into());
    let err = load_error(dir.path());
    assert!(
        err.contains("transformer.wpe.weight") && err.contains("16"),
        "{err}"
    );
    // More layers than stored: refused before allocating.
    let dir = edited_gpt2(|c| c["n_layer"] = 40.into());
    let err = load_error(dir.path());
    assert!(
        err.contains("config.json") && err.contains("40 layers"),
        "{err}"
    );
    // A huge width that would overflow.
    let dir = edited_gpt2(|c| c["n_embd"] = 4_000_000_000i64.into());
    let err = load_error(dir.path());
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn bad_configs_are_named() {
    let dir = edited_gpt2(|c| c["model_type"] = "bert".into());
    assert!(load_error(dir.path()).contains("\"bert\""));
    let dir = edited_gpt2(|c| c["n_head"] = 5.into());
    let err = load_error(dir.path());
    assert!(err.contains("5 heads"), "{err}");
    let dir = edited_gpt2(|c| c["n_layer"] = (-2).into());
    assert!(load_error(dir.path()).contains("-2"));
    let dir = edited_gpt2(|c| c["activation_function"] = "tanhshrink".into());
    assert!(load_error(dir.path()).contains("tanhshrink"));
    let dir = edited_gpt2(|c| c["scale_attn_by_inverse_layer_idx"] = true.into());
    assert!(load_error(dir.path()).contains("scale_attn_by_inverse_layer_idx"));
    let dir = edited_gpt2(|c| c["n_embd"] = "wide".into());
    assert!(load_error(dir.path()).contains("n_embd"));
    let dir = edited_gpt2(|c| {
        c["attention_layers"] = serde_json::json!(["global", "sparse", "global"]);
    });
    assert!(load_error(dir.path()).contains("sparse"));

    let dir = tempfile::tempdir().unwrap();
    assert!(load_error(dir.path()).contains("config.json"));
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    assert!(load_error(dir.path()).contains("JSON"));
}

#[test]
fn sequence_longer_than_context_is_an_error() {
    let model = tiny();
    let ids = Tensor::zeros([1, 33], (Kind::Int64, Device::Cpu));
    let err = model
        .forward(&ids, &mut model.new_cache())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("33 new positions") && err.contains("32 positions"),
        "{err}"
    );

    let mut cache = model.new_cache();
    let _ = model
        .forward(
            &Tensor::zeros([1, 30], (Kind::Int64, Device::Cpu)),
            &mut cache,
        )
        .unwrap();
    let err = model
        .forward(
            &Tensor::zeros([1, 3], (Kind::Int64, Device::Cpu)),
            &mut cache,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("30 cached"), "{err}");
}

#[test]
fn token_ids_and_shapes_are_checked() {
    let model = tiny();
    let err = model
        .forward(
            &Tensor::from_slice(&[3i64, 96]).unsqueeze(0),
            &mut model.new_cache(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("token id 96"), "{err}");
    assert!(err.contains("96 tokens"), "{err}");
    let err = model
        .forward(
            &Tensor::from_slice(&[-1i64]).unsqueeze(0),
            &mut model.new_cache(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("-1"), "{err}");
    let err = model
        .forward(
            &Tensor::zeros([4], (Kind::Int64, Device::Cpu)),
            &mut model.new_cache(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("[4]"), "{err}");
    let err = Gpt::lm_loss(
        &Tensor::zeros([1, 1, 96], (Kind::Float, Device::Cpu)),
        &Tensor::zeros([1, 1], (Kind::Int64, Device::Cpu)),
        -100,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at least 2 positions"), "{err}");
}

#[test]
fn heads_check_their_inputs() {
    let (mc, _vs) = MultipleChoice::load(
        &fixture("openai_gpt_double_heads"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let ids = Tensor::zeros([2, 3, 8], (Kind::Int64, Device::Cpu));
    let err = mc
        .forward_t(
            &ids,
            &Tensor::full([2, 3], 8, (Kind::Int64, Device::Cpu)),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("position 8"), "{err}");
    let err = mc
        .forward_t(&ids, &Tensor::zeros([2], (Kind::Int64, Device::Cpu)), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mc_token_ids"), "{err}");

    let (classifier, _vs) =
        SequenceClassifier::load(&fixture("openai_gpt_classify"), Device::Cpu, Kind::Float)
            .unwrap();
    let ids = Tensor::ones([2, 5], (Kind::Int64, Device::Cpu));
    let err = classifier
        .loss(&ids, &Tensor::from_slice(&[0i64, 2]), 0.5, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("label 2") && err.contains("2 classes"),
        "{err}"
    );

    let vs = VarStore::new(Device::Cpu);
    let config = Config::from_file(&fixture("openai_gpt/config.json")).unwrap();
    let err = SequenceClassifier::new(&vs.root(), &config, 0, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("got 0"), "{err}");
    let err = SequenceClassifier::new(&vs.root(), &config, 2, Some(500))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pad token id 500"), "{err}");
}

#[test]
fn training_data_is_checked() {
    let err = LanguageModelTask::new(tiny(), &[1, 2, 3], &[1; 100], 4, 16, 8, 0, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("training split has 3 tokens"), "{err}");
    let err = LanguageModelTask::new(tiny(), &[1; 100], &[1; 100], 4, 64, 8, 0, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("got 64"), "{err}");
    let err = LanguageModelTask::new(
        tiny(),
        &[1, 200, 3].repeat(40),
        &[1; 100],
        4,
        16,
        8,
        0,
        None,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("token id 200"), "{err}");

    let vs = VarStore::new(Device::Cpu);
    let config = Config::from_file(&fixture("gpt2/config.json")).unwrap();
    let classifier = SequenceClassifier::new(&vs.root(), &config, 2, Some(0)).unwrap();
    let examples = vec![Example {
        ids: vec![5, 0, 6],
        label: 1,
    }];
    let err =
        gpt::train::ClassifierTask::new(classifier, examples.clone(), examples, 4, 0.5, 0, None)
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("padding token 0"), "{err}");
}
