//! The EC2 side of the fake: the region's instances and the API requests it answers,
//! one at a time under the fake's lock, as EC2 would answer them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{FakeInstance, DEFAULT_SUBNET_ID, TOKEN_RETENTION};
use puppet_conductor_cloud::{
    tags, CallCounts, CloudError, Instance, InstanceState, LaunchRequest,
};

/// How the region behaves over time and what it answers with.
pub(super) struct Settings {
    pub(super) boot: Duration,
    pub(super) shutdown: Duration,
    pub(super) lag: Duration,
    pub(super) retention: Duration,
    pub(super) page_size: usize,
    pub(super) zone: String,
    /// Launch times are `epoch` plus the tokio time since `created`.
    pub(super) epoch: DateTime<Utc>,
    pub(super) created: Instant,
}

impl Settings {
    /// Where DescribeInstances and TerminateInstances see the region from; `None`
    /// before anything existed.
    fn view(&self, now: Instant) -> Option<Instant> {
        now.checked_sub(self.lag)
    }
}

struct Record {
    id: String,
    request: LaunchRequest,
    launched_at: Instant,
    terminated_at: Option<Instant>,
    launch_time: Option<DateTime<Utc>>,
    private_ip: String,
    public_ip: Option<String>,
}

impl Record {
    /// The state as of `at`; `None` when it did not exist yet or is no longer listed.
    fn state_at(&self, at: Option<Instant>, s: &Settings) -> Option<InstanceState> {
        let at = at.filter(|at| *at >= self.launched_at)?;
        if let Some(gone) = self.terminated_at.filter(|t| at >= *t) {
            let since = at.duration_since(gone);
            return if since < s.shutdown {
                Some(InstanceState::ShuttingDown)
            } else if since < s.shutdown.saturating_add(s.retention) {
                Some(InstanceState::Terminated)
            } else {
                None
            };
        }
        if at.duration_since(self.launched_at) < s.boot {
            Some(InstanceState::Pending)
        } else {
            Some(InstanceState::Running)
        }
    }

    /// The state now as RunInstances sees it (an unlisted instance is terminated).
    fn true_state(&self, now: Instant, s: &Settings) -> InstanceState {
        self.state_at(Some(now), s)
            .unwrap_or(InstanceState::Terminated)
    }

    fn instance(&self, state: InstanceState, s: &Settings) -> Instance {
        let request = &self.request;
        let http_tokens = if request.instance.imdsv2_required {
            "required"
        } else {
            "optional"
        };
        Instance {
            id: self.id.clone(),
            state,
            tags: request.tags.clone(),
            private_ip: Some(self.private_ip.clone()),
            public_ip: self.public_ip.clone(),
            zone: Some(s.zone.clone()),
            launch_time: self.launch_time,
            image_id: Some(request.instance.image_id.clone()),
            instance_type: Some(request.instance.instance_type.clone()),
            subnet_id: Some(
                request
                    .instance
                    .subnet_id
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SUBNET_ID.to_owned()),
            ),
            security_group_ids: request.instance.security_group_ids.clone(),
            http_tokens: Some(http_tokens.to_owned()),
        }
    }

    fn truth(&self, now: Instant, s: &Settings) -> FakeInstance {
        FakeInstance {
            instance: self.instance(self.true_state(now, s), s),
            request: self.request.clone(),
            listed: self.state_at(Some(now), s).is_some(),
        }
    }
}

/// One DescribeInstances page: instances and the token of the next page.
pub(super) struct Page {
    pub(super) instances: Vec<Instance>,
    pub(super) next: Option<u64>,
}

/// The region's state and the counters.
#[derive(Default)]
pub(super) struct Region {
    /// Instances by launch sequence number (the order describe lists them in).
    records: BTreeMap<u64, Record>,
    by_id: HashMap<String, u64>,
    tokens: HashMap<String, u64>,
    /// Terminated records by when, oldest first: pruning reads only the expired ones.
    terminations: BTreeSet<(Instant, u64)>,
    /// Never reset, not even by [`Region::lose_state`]: EC2 never reuses an id.
    last_seq: u64,
    requests: u64,
    pub(super) calls: CallCounts,
    pub(super) pages_served: u64,
}

impl Region {
    /// Forget instances whose client token has expired (bounded memory in long runs).
    pub(super) fn prune(&mut self, now: Instant, s: &Settings) {
        let keep_for = s
            .shutdown
            .saturating_add(s.retention.max(TOKEN_RETENTION))
            .saturating_add(s.lag);
        while let Some(&(at, seq)) = self.terminations.first() {
            if now.saturating_duration_since(at) < keep_for {
                break;
            }
            self.terminations.pop_first();
            if let Some(r) = self.records.remove(&seq) {
                self.by_id.remove(&r.id);
                self.tokens.remove(&r.request.client_token);
            }
        }
    }

    /// An error as EC2 answers it, with a request id.
    pub(super) fn api_error(
        &mut self,
        operation: &'static str,
        code: &str,
        message: &str,
        status: u16,
    ) -> CloudError {
        self.requests += 1;
        let request_id = format!("fake-ec2-{:08}", self.requests);
        CloudError::api(operation, code, message, Some(status), Some(request_id))
    }

    pub(super) fn all(&self, now: Instant, s: &Settings) -> Vec<FakeInstance> {
        self.records.values().map(|r| r.truth(now, s)).collect()
    }

    pub(super) fn one(&self, id: &str, now: Instant, s: &Settings) -> Option<FakeInstance> {
        let seq = self.by_id.get(id)?;
        self.records.get(seq).map(|r| r.truth(now, s))
    }

    /// Terminate `id` now, bypassing the API; whether it was `pending` or `running`.
    pub(super) fn terminate_outside(&mut self, id: &str, now: Instant) -> bool {
        self.mark_terminated(id, now)
    }

    /// Marks `id` terminated at `now` unless it already was; whether it was alive.
    fn mark_terminated(&mut self, id: &str, now: Instant) -> bool {
        let Some(&seq) = self.by_id.get(id) else {
            return false;
        };
        let Some(record) = self.records.get_mut(&seq) else {
            return false;
        };
        if record.terminated_at.is_some() {
            return false;
        }
        record.terminated_at = Some(now);
        self.terminations.insert((now, seq));
        true
    }

    pub(super) fn lose_state(&mut self) {
        self.records.clear();
        self.by_id.clear();
        self.terminations.clear();
        self.tokens.clear();
    }

    /// RunInstances with ClientToken semantics as AWS documents them.
    pub(super) fn run_instances(
        &mut self,
        now: Instant,
        s: &Settings,
        request: &LaunchRequest,
    ) -> Result<Instance, CloudError> {
        let existing = self
            .tokens
            .get(&request.client_token)
            .and_then(|seq| self.records.get(seq))
            .map(|record| {
                // The original answer; only the state is current.
                (record.request == *request).then(|| record.instance(record.true_state(now, s), s))
            });
        match existing {
            Some(Some(instance)) => return Ok(instance),
            Some(None) => {
                return Err(self.api_error(
                    "RunInstances",
                    "IdempotentParameterMismatch",
                    "Arguments on this idempotent request are inconsistent with arguments \
                     used in previous request(s).",
                    400,
                ))
            }
            None => {}
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        let elapsed = now.saturating_duration_since(s.created);
        let record = Record {
            id: format!("i-{seq:017x}"),
            request: request.clone(),
            launched_at: now,
            terminated_at: None,
            launch_time: chrono::TimeDelta::from_std(elapsed)
                .ok()
                .and_then(|d| s.epoch.checked_add_signed(d)),
            private_ip: format!(
                "10.{}.{}.{}",
                (seq >> 16) & 0xff,
                (seq >> 8) & 0xff,
                seq & 0xff
            ),
            // Only the default VPC's subnets map public addresses by default.
            public_ip: request
                .instance
                .subnet_id
                .is_none()
                .then(|| format!("203.0.113.{}", 1 + seq % 254)),
        };
        let instance = record.instance(InstanceState::Pending, s);
        self.by_id.insert(record.id.clone(), seq);
        self.tokens.insert(request.client_token.clone(), seq);
        self.records.insert(seq, record);
        Ok(instance)
    }

    /// One DescribeInstances page filtered on `tag:MASTER = pattern`, after `after`.
    pub(super) fn describe_page(
        &self,
        now: Instant,
        s: &Settings,
        pattern: &str,
        after: Option<u64>,
    ) -> Page {
        let view = s.view(now);
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut matching = self
            .records
            .range((start, Bound::Unbounded))
            .filter(|(_, r)| {
                r.request
                    .tags
                    .get(tags::MASTER)
                    .is_some_and(|value| filter_matches(pattern, value))
            })
            .filter_map(|(seq, r)| Some((*seq, r.instance(r.state_at(view, s)?, s))));
        let mut instances = Vec::new();
        let mut last = None;
        for (seq, instance) in matching.by_ref().take(s.page_size) {
            last = Some(seq);
            instances.push(instance);
        }
        // As moto: a token only when more remain.
        let next = last.filter(|_| matching.next().is_some());
        Page { instances, next }
    }

    /// One TerminateInstances request: all or nothing, as EC2 does it.
    pub(super) fn terminate(
        &mut self,
        now: Instant,
        s: &Settings,
        ids: &[&str],
    ) -> Result<(), CloudError> {
        const OP: &str = "TerminateInstances";
        if let Some(bad) = ids.iter().find(|id| !well_formed(id)) {
            let message = format!("Invalid id: \"{bad}\" (expecting \"i-...\")");
            return Err(self.api_error(OP, "InvalidInstanceID.Malformed", &message, 400));
        }
        let view = s.view(now);
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| {
                let record = self.by_id.get(*id).and_then(|seq| self.records.get(seq));
                record.and_then(|r| r.state_at(view, s)).is_none()
            })
            .collect();
        let message = match missing.as_slice() {
            [] => None,
            [one] => Some(format!("The instance ID '{one}' does not exist")),
            many => Some(format!(
                "The instance IDs '{}' do not exist",
                many.join(", ")
            )),
        };
        if let Some(message) = message {
            return Err(self.api_error(OP, "InvalidInstanceID.NotFound", &message, 400));
        }
        for id in ids {
            self.mark_terminated(id, now);
        }
        Ok(())
    }
}

/// EC2's instance id syntax: `i-` and 8 or 17 hex digits.
pub(super) fn well_formed(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// Whether a filter value matches: `*` any run, `?` any one character, `\` escapes.
pub(super) fn filter_matches(pattern: &str, value: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '*' => Token::Any,
            '?' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let value: Vec<char> = value.chars().collect();
    // Greedy, backtracking to the last `*`.
    let (mut t, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = value.get(v) {
        match tokens.get(t) {
            Some(Token::One) => (t, v) = (t + 1, v + 1),
            Some(Token::Char(p)) if *p == c => (t, v) = (t + 1, v + 1),
            Some(Token::Any) => {
                star = Some((t, v));
                t += 1;
            }
            _ => match star {
                Some((st, sv)) => {
                    star = Some((st, sv + 1));
                    (t, v) = (st + 1, sv + 1);
                }
                None => return false,
            },
        }
    }
    tokens
        .get(t..)
        .is_some_and(|rest| rest.iter().all(|tok| *tok == Token::Any))
}
