use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use puppet_conductor_api::node::PuppetNodeSpec;
use puppet_conductor_api::pool::{
    PoolSelector, PoolStrategy, PuppetNodePoolSpec, PuppetNodeTemplate, RollingUpdate,
    ScaleDownOrder, SelectorOperator, SelectorRequirement, StrategyType,
};

use super::*;

fn spec(
    replicas: i32,
    surge: Option<IntOrString>,
    unavailable: Option<IntOrString>,
) -> PuppetNodePoolSpec {
    PuppetNodePoolSpec {
        replicas,
        selector: PoolSelector::default(),
        template: PuppetNodeTemplate {
            metadata: Default::default(),
            spec: serde_json::from_value(serde_json::json!({"masterRef": {"name": "pm"}})).unwrap(),
        },
        strategy: PoolStrategy {
            type_: StrategyType::RollingUpdate,
            rolling_update: Some(RollingUpdate {
                max_surge: surge,
                max_unavailable: unavailable,
            }),
        },
        min_ready_seconds: 0,
        scale_down_order: ScaleDownOrder::NewestFirst,
    }
}

fn member(name: &str, created: i64, updated: bool, ready: bool) -> Member {
    Member {
        name: name.into(),
        uid: format!("uid-{name}"),
        updated,
        deleting: false,
        ready,
        available: ready,
        ready_since: ready.then_some(0),
        created,
        in_sync: true,
    }
}

#[test]
fn bounds_default_to_one_surge_and_none_unavailable_and_resolve_percentages() {
    let b = bounds(&spec(10, None, None)).unwrap();
    assert_eq!((b.replicas, b.max_surge, b.max_unavailable), (10, 1, 0));
    let pct = |s: &str| Some(IntOrString::String(s.into()));
    let b = bounds(&spec(10, pct("25%"), pct("25%"))).unwrap();
    assert_eq!(
        (b.max_surge, b.max_unavailable),
        (3, 2),
        "surge rounds up, unavailability down"
    );
    let b = bounds(&spec(
        3,
        Some(IntOrString::Int(0)),
        Some(IntOrString::Int(0)),
    ))
    .unwrap();
    assert_eq!(
        b.max_unavailable, 1,
        "both 0: one may be unavailable, or nothing moves"
    );
    assert!(matches!(
        bounds(&spec(3, pct("lots"), None)),
        Err(PoolError::BadBound {
            field: "maxSurge",
            ..
        })
    ));
    assert!(bounds(&spec(3, None, pct("120%"))).is_err());
    assert_eq!(
        bounds(&spec(3, pct("2"), None)).unwrap().max_surge,
        2,
        "a count as a string"
    );
    assert!(bounds(&spec(3, Some(IntOrString::Int(-1)), None)).is_err());
}

#[test]
fn the_launch_hash_follows_instance_fields_only() {
    let base: PuppetNodeSpec =
        serde_json::from_value(serde_json::json!({"masterRef": {"name": "pm"}, "classes": ["a"]}))
            .unwrap();
    let mut classes = base.clone();
    classes.classes = vec!["b".into()];
    classes.environment = Some("staging".into());
    assert_eq!(launch_hash(&base), launch_hash(&classes));
    let mut image = base.clone();
    image.instance.image_id = Some("ami-12345678".into());
    assert_ne!(launch_hash(&base), launch_hash(&image));
    assert_eq!(launch_hash(&base).len(), 10);
    // Key order of free-form cloud-config does not matter.
    let a: PuppetNodeSpec = serde_json::from_str(
        r#"{"masterRef":{"name":"pm"},"instance":{"cloudConfig":{"x":{"b":1,"a":2}}}}"#,
    )
    .unwrap();
    let b: PuppetNodeSpec = serde_json::from_str(
        r#"{"masterRef":{"name":"pm"},"instance":{"cloudConfig":{"x":{"a":2,"b":1}}}}"#,
    )
    .unwrap();
    assert_eq!(launch_hash(&a), launch_hash(&b));
}

#[test]
fn names_take_the_lowest_free_ordinals() {
    let taken: BTreeSet<String> = ["web-0", "web-2", "other-1"].map(String::from).into();
    assert_eq!(node_names("web", &taken, 3), ["web-1", "web-3", "web-4"]);
    assert!(node_names("web", &taken, 0).is_empty());
}

#[test]
fn selectors_print_and_match_as_kubernetes_does() {
    let selector = PoolSelector {
        match_labels: [("app".to_string(), "web".to_string())].into(),
        match_expressions: vec![
            SelectorRequirement {
                key: "tier".into(),
                operator: SelectorOperator::In,
                values: vec!["b".into(), "a".into()],
            },
            SelectorRequirement {
                key: "canary".into(),
                operator: SelectorOperator::DoesNotExist,
                values: vec![],
            },
        ],
    };
    assert_eq!(selector_string(&selector), "app=web,tier in (a,b),!canary");
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert!(matches(
        &selector,
        Some(&labels(&[("app", "web"), ("tier", "a")]))
    ));
    assert!(!matches(
        &selector,
        Some(&labels(&[("app", "web"), ("tier", "c")]))
    ));
    assert!(!matches(
        &selector,
        Some(&labels(&[("app", "web"), ("tier", "a"), ("canary", "1")]))
    ));
    assert!(!matches(&selector, None));
    assert!(matches(&PoolSelector::default(), None));
    let not_in = PoolSelector {
        match_expressions: vec![SelectorRequirement {
            key: "tier".into(),
            operator: SelectorOperator::NotIn,
            values: vec!["a".into()],
        }],
        ..Default::default()
    };
    assert!(matches(&not_in, None), "NotIn holds for an absent label");
    assert!(!matches(&not_in, Some(&labels(&[("tier", "a")]))));
    assert_eq!(selector_string(&not_in), "tier notin (a)");
}

fn rolling(replicas: usize, surge: usize, unavailable: usize) -> Bounds {
    Bounds {
        replicas,
        max_surge: surge,
        max_unavailable: unavailable,
    }
}

#[test]
fn scale_down_deletes_not_ready_first_then_newest() {
    let members = [
        member("web-0", 1, true, true),
        member("web-1", 2, true, false),
        member("web-2", 3, true, true),
        member("web-3", 4, true, true),
    ];
    let plan = plan_pool(
        StrategyType::RollingUpdate,
        rolling(2, 1, 0),
        ScaleDownOrder::NewestFirst,
        &members,
    );
    assert_eq!(plan.delete, ["web-1", "web-3"]);
    assert_eq!(plan.create, 0);
    let plan = plan_pool(
        StrategyType::RollingUpdate,
        rolling(2, 1, 0),
        ScaleDownOrder::OldestFirst,
        &members,
    );
    assert_eq!(plan.delete, ["web-1", "web-0"]);
}

#[test]
fn a_roll_surges_first_and_deletes_an_old_node_only_once_a_new_one_is_available() {
    let old = [
        member("web-0", 1, false, true),
        member("web-1", 2, false, true),
        member("web-2", 3, false, true),
    ];
    let b = rolling(3, 1, 0);
    let plan = plan_pool(
        StrategyType::RollingUpdate,
        b,
        ScaleDownOrder::NewestFirst,
        &old,
    );
    assert_eq!((plan.create, plan.delete.len()), (1, 0));
    let mut with_new = old.to_vec();
    with_new.push(member("web-3", 4, true, false));
    let plan = plan_pool(
        StrategyType::RollingUpdate,
        b,
        ScaleDownOrder::NewestFirst,
        &with_new,
    );
    assert_eq!(
        plan,
        PoolPlan::default(),
        "surge used up, the new node not Ready"
    );
    with_new[3].ready = true;
    with_new[3].available = true;
    let plan = plan_pool(
        StrategyType::RollingUpdate,
        b,
        ScaleDownOrder::NewestFirst,
        &with_new,
    );
    assert_eq!(plan.delete, ["web-2"]);
    assert_eq!(
        plan.create, 0,
        "the old node still counts until its cleanup is done"
    );
}

#[test]
fn on_delete_keeps_the_count_and_never_replaces_old_nodes() {
    let members = [
        member("web-0", 1, false, true),
        member("web-1", 2, false, true),
    ];
    let plan = plan_pool(
        StrategyType::OnDelete,
        rolling(3, 1, 0),
        ScaleDownOrder::NewestFirst,
        &members,
    );
    assert_eq!(
        plan,
        PoolPlan {
            create: 1,
            ..Default::default()
        }
    );
    let plan = plan_pool(
        StrategyType::OnDelete,
        rolling(1, 1, 0),
        ScaleDownOrder::NewestFirst,
        &members,
    );
    assert_eq!(plan.delete, ["web-1"]);
}

#[test]
fn nodes_out_of_line_with_the_template_are_updated_in_place() {
    let mut members = vec![
        member("web-0", 1, true, true),
        member("web-1", 2, false, true),
    ];
    members[1].in_sync = false;
    members.push(Member {
        deleting: true,
        in_sync: false,
        ..member("web-2", 3, true, true)
    });
    let plan = plan_pool(
        StrategyType::RollingUpdate,
        rolling(2, 1, 0),
        ScaleDownOrder::NewestFirst,
        &members,
    );
    assert_eq!(plan.update, ["web-1"], "not a node being deleted");
}

#[test]
fn status_counts_and_conditions() {
    let mut members = vec![
        member("web-0", 1, true, true),
        member("web-1", 2, false, true),
        member("web-2", 3, true, false),
    ];
    members.push(Member {
        deleting: true,
        ..member("web-3", 4, false, true)
    });
    let view = PoolView {
        generation: Some(3),
        hash: "abc",
        selector: "app=web",
        paused: None,
        failure: None,
        invalid: None,
        bounds: rolling(3, 1, 0),
    };
    let now = chrono::Utc::now();
    let s = pool_status(None, &members, &view, now);
    assert_eq!(
        (
            s.replicas,
            s.ready_replicas,
            s.updated_replicas,
            s.available_replicas,
            s.unavailable_replicas
        ),
        (3, 2, 2, 2, 1)
    );
    let cond = |t: &str| s.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
    assert_eq!(cond("Available").status, "False");
    assert_eq!(cond("Progressing").reason, "NodesUpdating");
    assert_eq!(cond("Paused").status, "False");
    assert_eq!(s.selector.as_deref(), Some("app=web"));
    let done = [
        member("web-0", 1, true, true),
        member("web-2", 3, true, true),
        member("web-4", 5, true, true),
    ];
    let s = pool_status(
        Some(&s),
        &done,
        &PoolView {
            paused: Some("annotation"),
            ..view
        },
        now,
    );
    assert_eq!(
        s.conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap()
            .reason,
        "Paused"
    );
    assert!(s
        .conditions
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True"));
    let s = pool_status(
        Some(&s),
        &done,
        &PoolView {
            invalid: Some("bad maxSurge"),
            ..view
        },
        now,
    );
    let progressing = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "InvalidSpec")
    );
}

/// One step of a pool's world after a pass: some node becomes Ready, some deletion
/// completes.
#[derive(Clone, Debug)]
enum Event {
    Ready(usize),
    Gone(usize),
    Pass,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0usize..20).prop_map(Event::Ready),
        (0usize..20).prop_map(Event::Gone),
        Just(Event::Pass),
    ]
}

proptest! {
    /// A roll from an all-available pool never exceeds replicas + maxSurge nodes (those
    /// being deleted included), never drops below replicas - maxUnavailable available
    /// nodes, and ends with every node updated and available.
    #[test]
    fn a_roll_stays_within_its_bounds_and_completes(
        replicas in 1usize..8,
        surge in 0usize..3,
        unavailable in 0usize..3,
        events in proptest::collection::vec(event(), 0..200),
    ) {
        let unavailable = if surge == 0 && unavailable == 0 { 1 } else { unavailable };
        let b = rolling(replicas, surge, unavailable);
        let mut members: Vec<Member> = (0..replicas)
            .map(|i| member(&format!("n-{i}"), i as i64, false, true))
            .collect();
        let mut next = replicas;
        let min_available = replicas.saturating_sub(unavailable);
        let pass = |members: &mut Vec<Member>, next: &mut usize| {
            let plan = plan_pool(StrategyType::RollingUpdate, b, ScaleDownOrder::NewestFirst, members);
            for name in &plan.delete {
                if let Some(m) = members.iter_mut().find(|m| &m.name == name) {
                    m.deleting = true;
                }
            }
            for _ in 0..plan.create {
                members.push(member(&format!("n-{next}"), *next as i64, true, false));
                *next += 1;
            }
        };
        let check = |members: &[Member]| {
            let available = members.iter().filter(|m| !m.deleting && m.available).count();
            prop_assert!(members.len() <= replicas + surge, "{} nodes > {replicas} + {surge}", members.len());
            prop_assert!(available >= min_available, "{available} available < {min_available}");
            Ok(())
        };
        for e in events {
            match e {
                Event::Pass => pass(&mut members, &mut next),
                Event::Ready(i) => {
                    if let Some(m) = members.iter_mut().filter(|m| !m.ready).nth(i % 4) {
                        m.ready = true;
                        m.available = true;
                    }
                }
                Event::Gone(i) => {
                    let deleting: Vec<usize> = members
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| m.deleting)
                        .map(|(at, _)| at)
                        .collect();
                    if !deleting.is_empty() {
                        members.remove(deleting[i % deleting.len()]);
                    }
                }
            }
            check(&members)?;
        }
        // Then the world settles: every pass is followed by everything becoming ready
        // and every deletion completing.
        for _ in 0..(4 * replicas + 4) {
            pass(&mut members, &mut next);
            check(&members)?;
            for m in members.iter_mut() {
                m.ready = true;
                m.available = true;
            }
            check(&members)?;
            members.retain(|m| !m.deleting);
        }
        prop_assert_eq!(members.len(), replicas);
        prop_assert!(members.iter().all(|m| m.updated && m.available));
    }
}
