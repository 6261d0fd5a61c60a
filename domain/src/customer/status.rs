use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a customer stands in the admission pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomerStatus {
    New,
    Contacted,
    Qualified,
    Applied,
    Enrolled,
    Lost,
}

impl CustomerStatus {
    pub const ALL: [CustomerStatus; 6] = [
        CustomerStatus::New,
        CustomerStatus::Contacted,
        CustomerStatus::Qualified,
        CustomerStatus::Applied,
        CustomerStatus::Enrolled,
        CustomerStatus::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::New => "new",
            CustomerStatus::Contacted => "contacted",
            CustomerStatus::Qualified => "qualified",
            CustomerStatus::Applied => "applied",
            CustomerStatus::Enrolled => "enrolled",
            CustomerStatus::Lost => "lost",
        }
    }

    fn rank(self) -> Option<u8> {
        match self {
            CustomerStatus::New => Some(0),
            CustomerStatus::Contacted => Some(1),
            CustomerStatus::Qualified => Some(2),
            CustomerStatus::Applied => Some(3),
            CustomerStatus::Enrolled => Some(4),
            CustomerStatus::Lost => None,
        }
    }

    /// The pipeline moves forward (skipping steps is allowed: a walk-in may apply at once);
    /// any open customer may be lost; enrolled and lost are final, except that a lost lead
    /// may be reopened as new when they come back.
    pub fn can_move_to(self, next: CustomerStatus) -> bool {
        match (self.rank(), next.rank()) {
            _ if self == next => true,
            (Some(4), _) => false,
            (Some(_), None) => true,
            (Some(a), Some(b)) => b > a,
            (None, Some(0)) => true,
            (None, _) => false,
        }
    }
}

impl fmt::Display for CustomerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CustomerStatus {
    type Err = crate::values::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CustomerStatus::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or(crate::values::Invalid(
                "status must be one of new, contacted, qualified, applied, enrolled, lost",
            ))
    }
}
