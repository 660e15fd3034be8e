//! Data: LLaVA conversation JSON and images, HF tokenizers, the chat template, padded batches,
//! and the built-in Shapes world generator.

pub mod answers;
pub mod batch;
pub mod dataset;
pub mod easy_vqa;
pub mod image;
pub mod images;
pub mod llava;
pub mod mined;
pub mod prefs;
pub mod qtype;
pub mod question;
pub mod shapes;
pub mod template;
pub mod token_cache;
pub mod tokenizer;
pub mod tokenizer_build;

pub use answers::{Answer, Sample, read_answers, write_answers};
pub use batch::{HostBatch, Padding, host_batch};
pub use dataset::Dataset;
pub use images::ImageTable;
pub use llava::{Conversation, PreferencePair, Speaker, Turn};
pub use qtype::{NegativeSampling, QuestionType};
pub use question::question_batch;
pub use template::{Encoded, encode_conversation, encode_prompt, normalise_answer};
pub use tokenizer::{CHAT_TOKENS, TextTokenizer};
