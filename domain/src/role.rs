//! Staff roles. Parsed once at the edge; the rest of the code never compares role strings.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Superadmin,
    Admin,
    Superagent,
    Agent,
    Dataentry,
    /// Compliance officers: read-only access to customers, history, audit and verification.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Superadmin,
        Role::Admin,
        Role::Superagent,
        Role::Agent,
        Role::Dataentry,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Superadmin => "superadmin",
            Role::Admin => "admin",
            Role::Superagent => "superagent",
            Role::Agent => "agent",
            Role::Dataentry => "dataentry",
            Role::Auditor => "auditor",
        }
    }

    /// The roles this role inherits permissions from, per the security review's hierarchy.
    /// The auditor stands outside the hierarchy: it inherits nothing and nobody inherits it.
    pub fn inherits(self) -> &'static [Role] {
        match self {
            Role::Superadmin => &[Role::Admin, Role::Superagent, Role::Agent, Role::Dataentry],
            Role::Admin => &[Role::Superagent, Role::Agent, Role::Dataentry],
            Role::Superagent => &[Role::Agent, Role::Dataentry],
            Role::Agent => &[Role::Dataentry],
            Role::Dataentry | Role::Auditor => &[],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role; expected one of superadmin, admin, superagent, agent, dataentry, auditor")]
pub struct UnknownRole;

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(UnknownRole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_parses_from_its_own_name_and_nothing_else_parses() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert_eq!("Admin".parse::<Role>(), Err(UnknownRole));
        assert_eq!("root".parse::<Role>(), Err(UnknownRole));
    }
}
