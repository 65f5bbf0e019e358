//! EC2 instances as the operator sees them: no SDK types, so the planner and the fakes
//! share them with the EC2 client.

pub mod tags;

use std::collections::BTreeMap;
use std::fmt;

/// One EC2 instance as the operator sees it; no SDK types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The instance id (`i-...`).
    pub id: String,
    /// Its lifecycle state.
    pub state: InstanceState,
    /// All its tags.
    pub tags: BTreeMap<String, String>,
    /// Private IPv4 address, once assigned.
    pub private_ip: Option<String>,
    /// Public IPv4 address, if it has one.
    pub public_ip: Option<String>,
    /// Availability zone.
    pub zone: Option<String>,
    /// When it was launched.
    pub launch_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The AMI it runs.
    pub image_id: Option<String>,
    /// The instance type (e.g. `t3.micro`).
    pub instance_type: Option<String>,
    /// The subnet it is in (VPC only).
    pub subnet_id: Option<String>,
    /// Its security group ids.
    pub security_group_ids: Vec<String>,
    /// IMDS token requirement from MetadataOptions: `"required"` (IMDSv2 only)
    /// or `"optional"`; `None` when the cloud does not report it.
    pub http_tokens: Option<String>,
}

impl Instance {
    /// The value of tag `key`, if the instance carries it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// EC2's instance lifecycle states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Launching.
    Pending,
    /// Running (not necessarily booted).
    Running,
    /// Being terminated.
    ShuttingDown,
    /// Terminated; stays visible for a while (in moto: forever).
    Terminated,
    /// Being stopped.
    Stopping,
    /// Stopped.
    Stopped,
    /// A state this client does not know, or none reported.
    Unknown,
}

impl InstanceState {
    /// EC2's name for the state (`"shutting-down"` ...); `"unknown"` for [`InstanceState::Unknown`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Unknown => "unknown",
        }
    }

    /// The state for EC2's name (`instanceState.name`).
    pub fn from_name(name: &str) -> Self {
        match name {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "shutting-down" => Self::ShuttingDown,
            "terminated" => Self::Terminated,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            _ => Self::Unknown,
        }
    }

    /// The state for EC2's numeric code (`instanceState.code`); only the low
    /// byte is the state, the high byte is internal.
    pub fn from_code(code: i32) -> Self {
        match code & 0xff {
            0 => Self::Pending,
            16 => Self::Running,
            32 => Self::ShuttingDown,
            48 => Self::Terminated,
            64 => Self::Stopping,
            80 => Self::Stopped,
            _ => Self::Unknown,
        }
    }

    /// Whether the instance is gone or going (`shutting-down`, `terminated`):
    /// what deletion and fencing wait for.
    pub fn is_terminating(self) -> bool {
        matches!(self, Self::ShuttingDown | Self::Terminated)
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and how an instance runs: a node's settings over its master's defaults (the
/// validated spec, `spec::ValidNode`), the same for every incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSettings {
    /// The AMI.
    pub image_id: String,
    /// The instance type.
    pub instance_type: String,
    /// The subnet; the default VPC's choice when `None`.
    pub subnet_id: Option<String>,
    /// Security group ids (with a subnet they must be in its VPC).
    pub security_group_ids: Vec<String>,
    /// Instance profile: a name, or an ARN (anything starting with `arn:`).
    pub iam_instance_profile: Option<String>,
    /// EC2 key pair name.
    pub key_name: Option<String>,
    /// Require IMDSv2 (`HttpTokens=required`, endpoint enabled).
    pub imdsv2_required: bool,
}

impl InstanceSettings {
    /// An instance of `image_id` and `instance_type` with IMDSv2 required and nothing
    /// else set (the default VPC's subnet, no groups, profile or key pair).
    pub fn new(image_id: impl Into<String>, instance_type: impl Into<String>) -> Self {
        Self {
            image_id: image_id.into(),
            instance_type: instance_type.into(),
            subnet_id: None,
            security_group_ids: Vec::new(),
            iam_instance_profile: None,
            key_name: None,
            imdsv2_required: true,
        }
    }
}

/// What to launch. Built by the reconciler from the node's validated settings, its
/// names and the rendered user data of one incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRequest {
    /// Where and how it runs.
    pub instance: InstanceSettings,
    /// Tags for the instance and its volumes (see [`tags`]).
    pub tags: BTreeMap<String, String>,
    /// User data as plain text (at most 16 KiB); the client base64-encodes it.
    /// Not secret: anyone on the instance or with EC2 read access can read it.
    pub user_data: String,
    /// Idempotency token (at most 64 ASCII characters), derived from node UID
    /// and incarnation.
    pub client_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in [
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::ShuttingDown,
            InstanceState::Terminated,
            InstanceState::Stopping,
            InstanceState::Stopped,
            InstanceState::Unknown,
        ] {
            assert_eq!(InstanceState::from_name(state.as_str()), state);
            assert_eq!(state.to_string(), state.as_str());
        }
        assert_eq!(
            InstanceState::from_name("rebooting"),
            InstanceState::Unknown
        );
    }

    #[test]
    fn state_codes() {
        let cases = [
            (0, InstanceState::Pending),
            (16, InstanceState::Running),
            (32, InstanceState::ShuttingDown),
            (48, InstanceState::Terminated),
            (64, InstanceState::Stopping),
            (80, InstanceState::Stopped),
            // The high byte is internal to EC2 and must be ignored.
            (256 + 16, InstanceState::Running),
            (7, InstanceState::Unknown),
        ];
        for (code, state) in cases {
            assert_eq!(InstanceState::from_code(code), state, "{code}");
        }
    }

    #[test]
    fn terminating_states() {
        assert!(InstanceState::ShuttingDown.is_terminating());
        assert!(InstanceState::Terminated.is_terminating());
        assert!(!InstanceState::Running.is_terminating());
        assert!(!InstanceState::Stopped.is_terminating());
        assert!(!InstanceState::Unknown.is_terminating());
    }
}
