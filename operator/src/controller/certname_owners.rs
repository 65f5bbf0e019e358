//! One owner per certname on a CA: which PuppetNode, of any master sharing the CA, claims
//! a certname first.
//!
//! A node claims its fixed `spec.certname`, or every generated `<uid>-<incarnation>`. Two
//! nodes (of two masters, in two namespaces) whose masters name the same `ca.url` and that
//! claim the same certname conflict: the older node (creation time, then UID) keeps it,
//! the newer one signs, revokes and removes nothing for it and reports `CertnameConflict`.
//! The nodes and masters come from one listing in the operator's scope, reused for
//! `max_age`; a failed listing is an error, never "no conflict".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::ResourceExt;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::context::Scope;
use crate::api::master::PuppetMaster;
use crate::api::node::PuppetNode;

/// One node as far as certname ownership goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    /// `namespace/name`.
    pub key: String,
    /// UID.
    pub uid: String,
    /// Creation time (older wins).
    pub created: Option<Time>,
    /// Its master's normalised CA URL (`None`: master not found).
    pub ca: Option<String>,
    /// Its fixed certname, if any.
    pub fixed_certname: Option<String>,
}

impl Claimant {
    /// Whether this node claims `certname`.
    pub fn claims(&self, certname: &str) -> bool {
        match &self.fixed_certname {
            Some(fixed) => fixed == certname,
            None => certname
                .strip_prefix(self.uid.as_str())
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|n| n.parse::<i64>().is_ok_and(|n| n > 0)),
        }
    }
}

/// The CA URL as compared: lower case, without a trailing `/`.
pub fn normalize_ca_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The older node, other than `me`, on the same CA that claims `certname` (pure).
pub fn older_claimant<'a>(
    claimants: impl IntoIterator<Item = &'a Claimant>,
    me: &Claimant,
    certname: &str,
) -> Option<&'a Claimant> {
    let rank = |c: &'a Claimant| (c.created.as_ref().map(|t| t.0), c.uid.as_str());
    let mine = (me.created.as_ref().map(|t| t.0), me.uid.as_str());
    claimants
        .into_iter()
        .filter(|c| c.uid != me.uid && c.ca.is_some() && c.ca == me.ca && c.claims(certname))
        .filter(|c| rank(c) < mine)
        .min_by_key(|c| rank(c))
}

/// The claimants of one listing, indexed by what they claim (a fixed certname, or the
/// UID a generated certname begins with): a pass reads the few that could claim its
/// certname, not every node in scope.
#[derive(Debug, Default)]
pub struct Claimants {
    list: Vec<Claimant>,
    by_claim: HashMap<String, Vec<usize>>,
}

impl Claimants {
    /// Indexes `list`.
    pub fn new(list: Vec<Claimant>) -> Self {
        let mut by_claim: HashMap<String, Vec<usize>> = HashMap::new();
        for (at, c) in list.iter().enumerate() {
            let claim = c.fixed_certname.clone().unwrap_or_else(|| c.uid.clone());
            by_claim.entry(claim).or_default().push(at);
        }
        Self { list, by_claim }
    }

    /// Those that might claim `certname` (a superset: [`Claimant::claims`] decides).
    pub fn candidates(&self, certname: &str) -> Vec<&Claimant> {
        let generated = certname.rsplit_once('-').map(|(uid, _)| uid);
        [Some(certname), generated.filter(|uid| *uid != certname)]
            .into_iter()
            .flatten()
            .filter_map(|claim| self.by_claim.get(claim))
            .flatten()
            .filter_map(|&at| self.list.get(at))
            .collect()
    }
}

/// The nodes in scope, listed at most once per `max_age`.
#[derive(Default)]
pub struct CertnameOwners {
    cache: Mutex<Option<(Instant, Arc<Claimants>)>>,
}

impl CertnameOwners {
    /// The older node claiming `certname` on `my_ca`, if any (`me` is the asking node).
    pub async fn conflict(
        &self,
        client: &kube::Client,
        scope: &Scope,
        max_age: Duration,
        me: Claimant,
        certname: &str,
    ) -> Result<Option<String>, kube::Error> {
        let claimants = self.claimants(client, scope, max_age).await?;
        Ok(older_claimant(claimants.candidates(certname), &me, certname).map(|c| c.key.clone()))
    }

    async fn claimants(
        &self,
        client: &kube::Client,
        scope: &Scope,
        max_age: Duration,
    ) -> Result<Arc<Claimants>, kube::Error> {
        let mut cache = self.cache.lock().await;
        if let Some((at, list)) = cache.as_ref() {
            if at.elapsed() < max_age {
                return Ok(list.clone());
            }
        }
        let params = ListParams::default();
        let masters = scope
            .api::<PuppetMaster>(client.clone())
            .list(&params)
            .await?;
        let nodes = scope
            .api::<PuppetNode>(client.clone())
            .list(&params)
            .await?;
        let ca_of = |ns: &str, name: &str| {
            masters
                .items
                .iter()
                .find(|m| m.namespace().as_deref() == Some(ns) && m.name_any() == name)
                .map(|m| normalize_ca_url(&m.spec.ca.url))
        };
        let list: Vec<Claimant> = nodes
            .items
            .iter()
            .filter_map(|n| {
                let ns = n.namespace()?;
                Some(Claimant {
                    key: format!("{ns}/{}", n.name_any()),
                    uid: n.uid()?,
                    created: n.creation_timestamp(),
                    ca: ca_of(&ns, &n.spec.master_ref.name),
                    fixed_certname: n.spec.certname.clone(),
                })
            })
            .collect();
        let list = Arc::new(Claimants::new(list));
        *cache = Some((Instant::now(), list.clone()));
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant(key: &str, uid: &str, secs: i64, ca: &str, fixed: Option<&str>) -> Claimant {
        Claimant {
            key: key.into(),
            uid: uid.into(),
            created: chrono::DateTime::from_timestamp(secs, 0).map(crate::status::conditions::time),
            ca: Some(normalize_ca_url(ca)),
            fixed_certname: fixed.map(str::to_owned),
        }
    }

    #[test]
    fn the_older_node_on_the_same_ca_keeps_a_shared_certname() {
        let a = claimant(
            "a/web",
            "uid-a",
            100,
            "https://ca:8140",
            Some("web.example.com"),
        );
        let b = claimant(
            "b/web",
            "uid-b",
            200,
            "https://CA:8140/",
            Some("web.example.com"),
        );
        let all = vec![a.clone(), b.clone()];
        assert_eq!(
            older_claimant(&all, &b, "web.example.com").map(|c| c.key.as_str()),
            Some("a/web")
        );
        assert_eq!(
            older_claimant(&all, &a, "web.example.com"),
            None,
            "the older keeps it"
        );
        let other_ca = claimant(
            "c/web",
            "uid-c",
            50,
            "https://other:8140",
            Some("web.example.com"),
        );
        assert_eq!(older_claimant(&[other_ca], &b, "web.example.com"), None);
    }

    #[test]
    fn a_fixed_certname_equal_to_a_generated_one_conflicts() {
        let gen = claimant("a/n", "0f3c", 100, "https://ca", None);
        let fixed = claimant("b/n", "9abc", 200, "https://ca", Some("0f3c-2"));
        assert!(gen.claims("0f3c-2") && !gen.claims("0f3c-x") && !gen.claims("0f3c-0"));
        assert_eq!(
            older_claimant(&[gen.clone(), fixed.clone()], &fixed, "0f3c-2").map(|c| c.key.as_str()),
            Some("a/n")
        );
    }

    #[test]
    fn the_index_finds_what_a_scan_of_every_claimant_finds() {
        // Generated UIDs, fixed certnames, a fixed certname shaped like a generated one,
        // and UIDs that contain dashes, on two CAs.
        let mut list = Vec::new();
        for i in 0..40i64 {
            let ca = if i % 3 == 0 { "https://b" } else { "https://a" };
            let fixed = match i % 5 {
                0 => Some(format!("web{}.example.com", i % 4)),
                1 => Some(format!("u-{}-{}", i % 7, 1 + i % 2)),
                _ => None,
            };
            let uid = format!("u-{}", i % 9);
            list.push(claimant(
                &format!("ns/n{i}"),
                &uid,
                100 + i,
                ca,
                fixed.as_deref(),
            ));
        }
        let index = Claimants::new(list.clone());
        let certnames = (0..4)
            .map(|k| format!("web{k}.example.com"))
            .chain((0..9).flat_map(|u| (0..4).map(move |n| format!("u-{u}-{n}"))));
        let mut conflicts = 0;
        for certname in certnames {
            for me in &list {
                let scanned = older_claimant(&list, me, &certname).map(|c| &c.key);
                let indexed =
                    older_claimant(index.candidates(&certname), me, &certname).map(|c| &c.key);
                assert_eq!(scanned, indexed, "{certname} for {}", me.key);
                conflicts += usize::from(scanned.is_some());
            }
        }
        assert!(
            conflicts > 20,
            "the case has conflicts to find: {conflicts}"
        );
    }
}
