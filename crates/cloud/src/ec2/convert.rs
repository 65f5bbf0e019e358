//! Between the operator's cloud types and aws-sdk-ec2's: pure functions, no I/O.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    self as ec2, HttpTokensState, IamInstanceProfileSpecification, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, ResourceType, TagSpecification,
};

use crate::error::CloudError;
use crate::{tags, Instance, InstanceState, LaunchRequest};

/// EC2's limit on user data, before base64.
pub(crate) const MAX_USER_DATA_BYTES: usize = 16 * 1024;
/// EC2's limit on a client token.
pub(crate) const MAX_CLIENT_TOKEN_CHARS: usize = 64;

/// The SDK's instance as ours; `None` without an instance id.
pub(crate) fn instance_from_sdk(instance: &ec2::Instance) -> Option<Instance> {
    let id = instance.instance_id()?.to_owned();
    Some(Instance {
        id,
        state: state_from_sdk(instance.state()),
        tags: tags_from_sdk(instance.tags()),
        private_ip: instance.private_ip_address().map(str::to_owned),
        public_ip: instance.public_ip_address().map(str::to_owned),
        zone: instance
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        launch_time: instance.launch_time().and_then(time_from_sdk),
        image_id: instance.image_id().map(str::to_owned),
        instance_type: instance.instance_type().map(|t| t.as_str().to_owned()),
        subnet_id: instance.subnet_id().map(str::to_owned),
        security_group_ids: instance
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .map(str::to_owned)
            .collect(),
        http_tokens: instance
            .metadata_options()
            .and_then(|m| m.http_tokens())
            .map(|t| t.as_str().to_owned()),
    })
}

/// The state by name, falling back on the numeric code.
pub(crate) fn state_from_sdk(state: Option<&ec2::InstanceState>) -> InstanceState {
    let Some(state) = state else {
        return InstanceState::Unknown;
    };
    let by_name = state.name().map_or(InstanceState::Unknown, |n| {
        InstanceState::from_name(n.as_str())
    });
    match (by_name, state.code()) {
        (InstanceState::Unknown, Some(code)) => InstanceState::from_code(code),
        (by_name, _) => by_name,
    }
}

fn tags_from_sdk(tags: &[ec2::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn time_from_sdk(
    time: &aws_sdk_ec2::primitives::DateTime,
) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// The tags as SDK tags.
pub(crate) fn tags_to_sdk(tags: &BTreeMap<String, String>) -> Vec<ec2::Tag> {
    tags.iter()
        .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
        .collect()
}

/// Tag specifications putting `tags` on the instance and on its volumes.
pub(crate) fn tag_specifications(tags: &BTreeMap<String, String>) -> Vec<TagSpecification> {
    if tags.is_empty() {
        // EC2 refuses a TagSpecification without tags.
        return Vec::new();
    }
    [ResourceType::Instance, ResourceType::Volume]
        .into_iter()
        .map(|resource| {
            TagSpecification::builder()
                .resource_type(resource)
                .set_tags(Some(tags_to_sdk(tags)))
                .build()
        })
        .collect()
}

/// An instance profile by ARN (`arn:...`) or by name.
pub(crate) fn instance_profile(profile: &str) -> IamInstanceProfileSpecification {
    let builder = IamInstanceProfileSpecification::builder();
    if profile.starts_with("arn:") {
        builder.arn(profile).build()
    } else {
        builder.name(profile).build()
    }
}

/// IMDSv2 only, endpoint on.
pub(crate) fn imdsv2_required() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::Required)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .build()
}

/// Check what EC2 would refuse anyway, so the error says exactly what is wrong
/// and nothing is sent (a launch is the expensive call to get wrong).
pub(crate) fn validate_launch(request: &LaunchRequest) -> Result<(), CloudError> {
    let invalid = |what: String| CloudError::InvalidRequest {
        operation: "RunInstances",
        what,
        source: None,
    };
    if request.instance.image_id.trim().is_empty() {
        return Err(invalid("image id is empty".to_owned()));
    }
    if request.instance.instance_type.trim().is_empty() {
        return Err(invalid("instance type is empty".to_owned()));
    }
    if request.user_data.len() > MAX_USER_DATA_BYTES {
        return Err(invalid(format!(
            "user data is {} bytes, EC2 allows {MAX_USER_DATA_BYTES}",
            request.user_data.len()
        )));
    }
    let token = &request.client_token;
    if token.is_empty() || token.len() > MAX_CLIENT_TOKEN_CHARS || !token.is_ascii() {
        return Err(invalid(format!(
            "client token must be 1 to {MAX_CLIENT_TOKEN_CHARS} ASCII characters (got {} bytes)",
            token.len()
        )));
    }
    tags::validate(&request.tags).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{
        GroupIdentifier, InstanceMetadataOptionsResponse, InstanceStateName, InstanceType,
        Placement,
    };

    fn state(name: Option<InstanceStateName>, code: Option<i32>) -> ec2::InstanceState {
        ec2::InstanceState::builder()
            .set_name(name)
            .set_code(code)
            .build()
    }

    #[test]
    fn states_from_sdk() {
        let cases = [
            (
                Some(InstanceStateName::Pending),
                None,
                InstanceState::Pending,
            ),
            (
                Some(InstanceStateName::Running),
                Some(16),
                InstanceState::Running,
            ),
            (
                Some(InstanceStateName::ShuttingDown),
                Some(32),
                InstanceState::ShuttingDown,
            ),
            (
                Some(InstanceStateName::Terminated),
                Some(48),
                InstanceState::Terminated,
            ),
            (
                Some(InstanceStateName::Stopping),
                None,
                InstanceState::Stopping,
            ),
            (
                Some(InstanceStateName::Stopped),
                None,
                InstanceState::Stopped,
            ),
            // A name the SDK does not know: the code decides.
            (
                Some(InstanceStateName::from("hibernating")),
                Some(80),
                InstanceState::Stopped,
            ),
            (None, Some(48), InstanceState::Terminated),
            (None, None, InstanceState::Unknown),
        ];
        for (name, code, expected) in cases {
            let s = state(name.clone(), code);
            assert_eq!(state_from_sdk(Some(&s)), expected, "{name:?} {code:?}");
        }
        assert_eq!(state_from_sdk(None), InstanceState::Unknown);
    }

    #[test]
    fn instance_from_sdk_maps_every_field() {
        let sdk = ec2::Instance::builder()
            .instance_id("i-0abc")
            .state(state(Some(InstanceStateName::Running), Some(16)))
            .tags(ec2::Tag::builder().key(tags::MASTER).value("ns/m").build())
            .tags(ec2::Tag::builder().key("empty").build())
            .private_ip_address("10.0.0.5")
            .public_ip_address("203.0.113.5")
            .placement(Placement::builder().availability_zone("us-east-1a").build())
            .launch_time(aws_sdk_ec2::primitives::DateTime::from_secs_and_nanos(
                1_700_000_000,
                5,
            ))
            .image_id("ami-1")
            .instance_type(InstanceType::T3Micro)
            .subnet_id("subnet-1")
            .security_groups(GroupIdentifier::builder().group_id("sg-1").build())
            .security_groups(GroupIdentifier::builder().group_name("no-id").build())
            .metadata_options(
                InstanceMetadataOptionsResponse::builder()
                    .http_tokens(HttpTokensState::Required)
                    .build(),
            )
            .build();
        let i = instance_from_sdk(&sdk).unwrap();
        assert_eq!(i.id, "i-0abc");
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.tag(tags::MASTER), Some("ns/m"));
        assert_eq!(i.tag("empty"), Some(""));
        assert_eq!(i.private_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(i.public_ip.as_deref(), Some("203.0.113.5"));
        assert_eq!(i.zone.as_deref(), Some("us-east-1a"));
        assert_eq!(
            i.launch_time,
            chrono::DateTime::from_timestamp(1_700_000_000, 5)
        );
        assert_eq!(i.image_id.as_deref(), Some("ami-1"));
        assert_eq!(i.instance_type.as_deref(), Some("t3.micro"));
        assert_eq!(i.subnet_id.as_deref(), Some("subnet-1"));
        assert_eq!(i.security_group_ids, vec!["sg-1".to_owned()]);
        assert_eq!(i.http_tokens.as_deref(), Some("required"));

        assert!(instance_from_sdk(&ec2::Instance::builder().build()).is_none());
        let bare = instance_from_sdk(&ec2::Instance::builder().instance_id("i-1").build()).unwrap();
        assert_eq!(bare.state, InstanceState::Unknown);
        assert!(bare.tags.is_empty() && bare.http_tokens.is_none());
    }

    #[test]
    fn instance_profile_by_name_or_arn() {
        let by_name = instance_profile("puppet-node");
        assert_eq!(by_name.name(), Some("puppet-node"));
        assert_eq!(by_name.arn(), None);
        let arn = "arn:aws:iam::123456789012:instance-profile/puppet-node";
        let by_arn = instance_profile(arn);
        assert_eq!(by_arn.arn(), Some(arn));
        assert_eq!(by_arn.name(), None);
    }

    #[test]
    fn tags_go_on_instance_and_volumes() {
        let tags: BTreeMap<String, String> = [
            (tags::MASTER.to_owned(), "ns/m".to_owned()),
            (tags::NAME.to_owned(), "web".to_owned()),
        ]
        .into();
        let specs = tag_specifications(&tags);
        let resources: Vec<_> = specs.iter().filter_map(|s| s.resource_type()).collect();
        assert_eq!(resources, [&ResourceType::Instance, &ResourceType::Volume]);
        for spec in &specs {
            assert_eq!(tags_from_sdk(spec.tags()), tags);
        }
        assert!(tag_specifications(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn imdsv2_options() {
        let o = imdsv2_required();
        assert_eq!(o.http_tokens(), Some(&HttpTokensState::Required));
        assert_eq!(
            o.http_endpoint(),
            Some(&InstanceMetadataEndpointState::Enabled)
        );
    }

    fn request() -> LaunchRequest {
        use crate::InstanceSettings;
        LaunchRequest {
            instance: InstanceSettings::new("ami-1", "t3.micro"),
            tags: BTreeMap::new(),
            user_data: "#cloud-config\n".into(),
            client_token: "uid-1".into(),
        }
    }

    #[test]
    fn launch_validation() {
        assert!(validate_launch(&request()).is_ok());
        let mut at_limit = request();
        at_limit.user_data = "x".repeat(MAX_USER_DATA_BYTES);
        at_limit.client_token = "t".repeat(MAX_CLIENT_TOKEN_CHARS);
        assert!(validate_launch(&at_limit).is_ok());

        let breakers: [fn(&mut LaunchRequest); 6] = [
            |r| r.instance.image_id = " ".into(),
            |r| r.instance.instance_type.clear(),
            |r| r.user_data = "x".repeat(MAX_USER_DATA_BYTES + 1),
            |r| r.client_token.clear(),
            |r| r.client_token = "t".repeat(MAX_CLIENT_TOKEN_CHARS + 1),
            |r| {
                r.tags.insert("aws:x".into(), String::new());
            },
        ];
        for (i, breaker) in breakers.iter().enumerate() {
            let mut r = request();
            breaker(&mut r);
            let e = validate_launch(&r).unwrap_err();
            assert_eq!(e.category(), "invalid_request", "case {i}");
            assert!(!e.is_retryable(), "case {i}");
        }
    }
}
