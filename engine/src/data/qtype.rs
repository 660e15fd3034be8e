//! Question types, used to break evaluation results down. Stored in LLaVA JSON as the optional
//! `question_types` list (one per assistant turn), as strings like `"count"` or
//! `"exist-adversarial"`; readers of plain LLaVA data simply ignore the field.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// POPE's three ways to pick an absent object for a "no" question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NegativeSampling {
    Random,
    Popular,
    Adversarial,
}

impl NegativeSampling {
    pub const ALL: [NegativeSampling; 3] = [Self::Random, Self::Popular, Self::Adversarial];
    pub fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Popular => "popular",
            Self::Adversarial => "adversarial",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuestionType {
    Colour,
    Shape,
    Count,
    Position,
    Relation,
    /// Existence yes/no; the sampling says how its negative counterpart was chosen.
    Exist(NegativeSampling),
}

impl QuestionType {
    pub const ALL: [QuestionType; 8] = [
        Self::Colour,
        Self::Shape,
        Self::Count,
        Self::Position,
        Self::Relation,
        Self::Exist(NegativeSampling::Random),
        Self::Exist(NegativeSampling::Popular),
        Self::Exist(NegativeSampling::Adversarial),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Colour => "colour",
            Self::Shape => "shape",
            Self::Count => "count",
            Self::Position => "position",
            Self::Relation => "relation",
            Self::Exist(NegativeSampling::Random) => "exist-random",
            Self::Exist(NegativeSampling::Popular) => "exist-popular",
            Self::Exist(NegativeSampling::Adversarial) => "exist-adversarial",
        }
    }
}

impl std::str::FromStr for QuestionType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "unknown question type {s:?}, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl Serialize for QuestionType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for QuestionType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
