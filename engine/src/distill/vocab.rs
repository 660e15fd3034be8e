//! Vocabulary policy between teacher and student. Distillation compares distributions over the
//! same token ids, so both models must use one tokenizer. Their embedding tables may still differ
//! in padding rows (Qwen-7B has 152064 rows, the small Qwens 151936, for the same 151646-token
//! tokenizer): those rows never hold a real token, so the comparison runs over the shared prefix.
//! Any other mismatch is an error, never a silent truncation.

use burn::prelude::*;

/// How the two vocabularies line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocabAlignment {
    pub student: usize,
    pub teacher: usize,
    /// Leading logit columns compared: `min(student, teacher)`.
    pub shared: usize,
}

impl VocabAlignment {
    /// Checks the two embedding-table sizes against the tokenizer's size (ids it can emit).
    pub fn new(student: usize, teacher: usize, tokenizer: usize) -> Result<Self, String> {
        let shared = student.min(teacher);
        if shared < tokenizer {
            return Err(format!(
                "the tokenizer emits {tokenizer} ids but the {} has only {shared} vocabulary rows",
                if student < teacher {
                    "student"
                } else {
                    "teacher"
                }
            ));
        }
        Ok(VocabAlignment {
            student,
            teacher,
            shared,
        })
    }

    /// A line for the log when the tables differ (padding rows only), else `None`.
    pub fn warning(&self) -> Option<String> {
        (self.student != self.teacher).then(|| {
            format!(
                "teacher has {} vocabulary rows and student {}: comparing logits over the first {} \
                 (the rest are padding rows the tokenizer never emits)",
                self.teacher, self.student, self.shared
            )
        })
    }

    /// Narrows `[B, T, V]` logits to the shared prefix (no copy when already that size).
    pub fn narrow(&self, logits: Tensor<3>) -> Tensor<3> {
        let v = logits.dims()[2];
        if v == self.shared {
            logits
        } else {
            logits.narrow(2, 0, self.shared)
        }
    }
}
