//! `#[track_model]` on a function whose `Ok` value implements `ModelOutput`:
//! token counts and acceptance are recorded from it.

use hyperkit_obs::{ModelOutput, track_model};

struct Completion {
    text: String,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.prompt_tokens)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.completion_tokens)
    }
    fn accepted(&self) -> Option<bool> {
        Some(!self.text.is_empty())
    }
}

#[track_model(model, task = "codegen")]
async fn complete(model: &str, prompt: &str) -> Result<Completion, std::io::Error> {
    Ok(Completion {
        text: prompt.to_uppercase(),
        prompt_tokens: 12,
        completion_tokens: 30,
    })
}

#[track_model(model, task = "summarize")]
fn summarize(model: &str, text: &str) -> Completion {
    Completion {
        text: String::new(),
        prompt_tokens: text.len() as u64,
        completion_tokens: 0,
    }
}

use test_support::metrics::counter_total as counter;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(complete("small-1", "fn main")).unwrap().text,
        "FN MAIN"
    );
    assert_eq!(summarize("small-1", "abcde").prompt_tokens, 5);

    let tokens = |task, kind| {
        counter(
            "hyperkit_model_tokens_total",
            &[("model", "small-1"), ("task", task), ("type", kind)],
        )
    };
    assert_eq!(tokens("codegen", "input"), 12);
    assert_eq!(tokens("codegen", "output"), 30);
    assert_eq!(tokens("summarize", "input"), 5);

    let accepted = |task, accepted| {
        counter(
            "hyperkit_model_acceptance_total",
            &[("model", "small-1"), ("task", task), ("accepted", accepted)],
        )
    };
    assert_eq!(accepted("codegen", "true"), 1);
    assert_eq!(accepted("summarize", "false"), 1);
}
