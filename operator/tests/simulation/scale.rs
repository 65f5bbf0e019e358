//! The fleet-scale benchmark (issue 13, item 5), run by `scripts/bench.sh`: the real
//! node controller (`runner::wiring::node_controller`, kube-runtime's `Controller`) and
//! the runner's CA watch against the in-memory API and fakes, with a fed watch stream, at
//! `PC_SCALE_NODES` nodes of one master (1,000 by default; 10,000 is slow, see benchmarks.md). Tokio's clock is paused, so what waits on a
//! timer (the CA watch's interval, requeues) takes its simulated time, and wall time is
//! the operator's CPU alone. It prints `BENCH` lines; it asserts only that the fleet
//! converged (every node signed once, one instance each), not how fast.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector;
use kube::runtime::watcher;
use puppet_conductor::api::PuppetMaster;
use puppet_conductor::cloud::tags;
use puppet_conductor::controller::events::MemoryEvents;
use puppet_conductor::controller::services::{MasterServices, ServiceFactory};
use puppet_conductor::controller::{Context, ReconcileError};
use puppet_conductor::fakes::ca::FakeCa;
use puppet_conductor::fakes::ec2::FakeEc2;
use puppet_conductor::fakes::records::FakeRecords;
use puppet_conductor::fakes::{Call, Fate, Gate};
use puppet_conductor::identity::ChallengeKey;
use puppet_conductor::runner::signing_watch::signing_watch;
use puppet_conductor::runner::slim::{slim_cached, LAST_APPLIED};
use puppet_conductor::runner::wiring::{
    node_controller, node_error_policy, reconcile_node, GuardedMaster, GuardedNode,
};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::MemoryApi;
use crate::world::{master_object, node_object, secret_object, settings, MASTER, NS};

/// How long the agents take to send their CSRs, one after the other.
const SPREAD: Duration = Duration::from_secs(10);

/// Every call answered at once.
struct Open;

#[async_trait::async_trait]
impl Gate for Open {
    async fn admit(&self, _call: &Call) -> Fate {
        Fate::Answer
    }
}

/// One master's services, built once.
struct Fixed(Arc<MasterServices>);

#[async_trait::async_trait]
impl ServiceFactory for Fixed {
    async fn services(&self, _: &PuppetMaster) -> Result<Arc<MasterServices>, ReconcileError> {
        Ok(self.0.clone())
    }
}

/// Counts live heap bytes (the whole test binary's), so what the operator alone holds is
/// the drop in live bytes when its context, caches and stores are dropped.
#[global_allocator]
static HEAP: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// The process's resident set (KiB), from /proc.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct World {
    api: MemoryApi,
    ec2: Arc<FakeEc2>,
    records: Arc<FakeRecords>,
    ca: Arc<FakeCa>,
    /// Reconciles started per node name.
    reconciles: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Reconciles finished.
    total: Arc<AtomicU64>,
    feed: futures::channel::mpsc::UnboundedSender<Result<GuardedNode, watcher::Error>>,
    writer: reflector::store::Writer<GuardedNode>,
    masters: reflector::store::Writer<GuardedMaster>,
    master_seen: Option<String>,
    /// The runner's Secret metadata watch (the holds read it).
    secrets: reflector::store::Writer<PartialObjectMeta<Secret>>,
    secrets_seen: BTreeMap<String, String>,
    /// The resourceVersion the watch last delivered, per node.
    seen: BTreeMap<String, String>,
}

impl World {
    fn nodes(&self) -> Vec<Value> {
        self.api.list("puppetnodes", NS)
    }

    fn phases(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for n in self.nodes() {
            let phase = n["status"]["phase"].as_str().unwrap_or("none").to_string();
            *out.entry(phase).or_default() += 1;
        }
        out
    }

    /// Feeds every node as the watch would after a relist (what a resync looks like to
    /// the controller), each with the API's current copy.
    fn relist(&mut self) {
        self.seen.clear();
        self.pump();
    }

    /// The watch: every node whose resourceVersion moved since the last look goes to the
    /// store and to the controller (whose predicates drop the operator's own status writes).
    fn pump(&mut self) {
        for (name, rv) in self.api.revisions("secrets", NS) {
            if self.secrets_seen.get(&name) == Some(&rv) {
                continue;
            }
            if let Some(obj) = self.api.get("secrets", NS, &name) {
                let meta: PartialObjectMeta<Secret> = serde_json::from_value(obj).unwrap();
                self.secrets
                    .apply_watcher_event(&watcher::Event::Apply(meta));
                self.secrets_seen.insert(name, rv);
            }
        }
        for (name, rv) in self.api.revisions("puppetmasters", NS) {
            if self.master_seen.as_ref() == Some(&rv) {
                continue;
            }
            if let Some(obj) = self.api.get("puppetmasters", NS, &name) {
                let mut master: GuardedMaster = serde_json::from_value(obj).unwrap();
                slim_cached(&mut master);
                self.masters
                    .apply_watcher_event(&watcher::Event::Apply(master));
                self.master_seen = Some(rv);
            }
        }
        for (name, rv) in self.api.revisions("puppetnodes", NS) {
            if self.seen.get(&name) == Some(&rv) {
                continue;
            }
            let Some(obj) = self.api.get("puppetnodes", NS, &name) else {
                continue;
            };
            self.seen.insert(name, rv);
            // As the runner's watch does before its store and controller see it.
            let mut node: GuardedNode = serde_json::from_value(obj).unwrap();
            slim_cached(&mut node);
            self.writer
                .apply_watcher_event(&watcher::Event::Apply(node.clone()));
            self.feed.unbounded_send(Ok(node)).unwrap();
        }
    }

    /// Simulated time passes with the watch running.
    async fn sleep(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20).min(until - Instant::now())).await;
            self.pump();
        }
    }

    /// Waits (simulated time, in 100 ms steps) until every node is in `phase`.
    async fn until_all(&mut self, phase: &str, n: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.phases().get(phase).copied().unwrap_or(0) == n {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "not all {phase} within {limit:?}: {:?}; the first: {}",
                self.phases(),
                self.nodes()
                    .first()
                    .map(|o| o["status"].to_string())
                    .unwrap_or_default()
            );
            self.sleep(Duration::from_millis(100)).await;
        }
    }

    /// External calls so far: EC2 DescribeInstances pages, S3 list pages, HEADs, PUTs,
    /// CA listings, CA calls in all.
    fn external(&self) -> [u64; 6] {
        let ec2 = self.ec2.calls();
        let s3 = self.records.calls();
        let ca = self.ca.calls();
        [
            ec2.describe,
            s3.list_pages,
            s3.heads,
            s3.puts,
            ca.get("list").copied().unwrap_or(0),
            ca.values().sum(),
        ]
    }
}

/// A Kubernetes request counted as `VERB resource` that reads.
fn is_read(call: &str) -> bool {
    call.starts_with("GET ") || call.starts_with("LIST ")
}

fn diff(after: [u64; 6], before: [u64; 6]) -> [u64; 6] {
    let mut out = [0; 6];
    for i in 0..6 {
        out[i] = after[i] - before[i];
    }
    out
}

async fn run(n: usize) {
    let rss_before = rss_kib();
    let api = MemoryApi::default();
    let gate: Arc<dyn Gate> = Arc::new(Open);
    let ec2 = Arc::new(FakeEc2::new(gate.clone()).with_page_size(1000));
    let records = Arc::new(FakeRecords::new(gate.clone(), "nodes/"));
    let ca = Arc::new(FakeCa::new(gate));
    let ca_pem = puppet_conductor::ca::PuppetCa::ca_certificate(ca.as_ref())
        .await
        .unwrap();
    for (name, data) in [
        (
            crate::world::CA_SECRET,
            vec![("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", "a")],
        ),
        (
            crate::world::CLOUD_SECRET,
            vec![("accessKeyId", "good"), ("secretAccessKey", "s")],
        ),
        (crate::world::CHALLENGE_SECRET, vec![("key", "k")]),
    ] {
        api.create("secrets", NS, secret_object(name, &data))
            .unwrap();
    }
    let master = api
        .create("puppetmasters", NS, master_object(false))
        .unwrap();
    for i in 0..n {
        // Applied as client-side `kubectl apply` does: with its copy of the applied object.
        let mut node = node_object(&format!("n{i:05}"), &["role::web"], false);
        let applied = node.to_string();
        node["metadata"]["annotations"] = serde_json::json!({ LAST_APPLIED: applied });
        api.create("puppetnodes", NS, node).unwrap();
    }
    let client = api.client();
    // The services as the operator's factory holds them while the watched Secret versions
    // stand (it reads no Secret then; `services_read_no_secret_while_...` shows it).
    let factory = Arc::new(Fixed(Arc::new(MasterServices {
        cloud: ec2.clone(),
        records: records.clone(),
        ca: ca.clone(),
        ca_cert_pem: ca_pem,
        challenge_key: ChallengeKey::from_bytes(&crate::world::KEY).unwrap(),
    })));
    // Held here too, so the operator's memory below leaves out this test's record of every
    // event (the real recorder keeps an event only for its 6-minute series window).
    let events = Arc::new(MemoryEvents::default());
    let ctx = Arc::new(Context::new(client, factory, events.clone(), settings()));
    // Stores are ready once a watch's initial list is done.
    let (master_store, mut master_writer) = reflector::store::<GuardedMaster>();
    master_writer.apply_watcher_event(&watcher::Event::Init);
    master_writer.apply_watcher_event(&watcher::Event::InitApply(
        serde_json::from_value(master).unwrap(),
    ));
    master_writer.apply_watcher_event(&watcher::Event::InitDone);
    ctx.master_cache.attach(master_store.clone());
    let (secret_store, mut secret_writer) = reflector::store::<PartialObjectMeta<Secret>>();
    secret_writer.apply_watcher_event(&watcher::Event::Init);
    secret_writer.apply_watcher_event(&watcher::Event::InitDone);
    ctx.secret_cache.attach(secret_store);
    let (store, mut writer) = reflector::store::<GuardedNode>();
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let (feed, stream) = futures::channel::mpsc::unbounded();
    let mut wakes = ctx.snapshots.subscribe_wakes();
    let wakes = futures::stream::poll_fn(move |cx| wakes.poll_recv(cx));
    let reconciles: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
    let total = Arc::new(AtomicU64::new(0));
    let shutdown = CancellationToken::new();
    let controller = node_controller(stream, store.clone(), futures::stream::pending(), wakes, 64);
    let counted = {
        let (reconciles, total) = (reconciles.clone(), total.clone());
        move |obj: Arc<GuardedNode>, ctx: Arc<Context>| {
            let name = obj
                .0
                .as_ref()
                .map(|n| n.metadata.name.clone().unwrap_or_default());
            *reconciles
                .lock()
                .unwrap()
                .entry(name.unwrap_or_default())
                .or_default() += 1;
            let total = total.clone();
            async move {
                let result = reconcile_node(obj, ctx).await;
                total.fetch_add(1, Ordering::Relaxed);
                result
            }
        }
    };
    let run = tokio::spawn(
        controller
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .run(counted, node_error_policy, ctx.clone())
            .for_each(|_| async {}),
    );
    // Read for the cached node's size, dropped before the heap is counted.
    let node_store = store.clone();
    let watch = tokio::spawn(signing_watch(
        ctx.clone(),
        master_store,
        store,
        shutdown.clone(),
    ));
    let mut w = World {
        api,
        ec2,
        records,
        ca,
        reconciles,
        total,
        feed,
        writer,
        masters: master_writer,
        master_seen: None,
        secrets: secret_writer,
        secrets_seen: BTreeMap::new(),
        seen: BTreeMap::new(),
    };

    // 1. Creation to AwaitingCSR.
    w.api.requests(true);
    let calls_before = w.external();
    w.relist();
    let took = w
        .until_all("AwaitingCSR", n, Duration::from_secs(3600))
        .await;
    let per_node: Vec<u64> = w.reconciles.lock().unwrap().values().copied().collect();
    let kube = w.api.requests(true);
    let kube_reads: u64 = kube
        .iter()
        .filter(|(call, _)| is_read(call))
        .map(|(_, c)| *c)
        .sum();
    println!(
        "BENCH {n} nodes, creation to AwaitingCSR: {:.1} reconciles per node (max {}) [target ≤ 3], {:.2} Kubernetes reads per node [target 0] ({kube:?}), {:.0} s simulated",
        per_node.iter().sum::<u64>() as f64 / n as f64,
        per_node.iter().max().copied().unwrap_or(0),
        kube_reads as f64 / n as f64,
        took.as_secs_f64()
    );
    let launch = diff(w.external(), calls_before);
    println!(
        "BENCH {n} nodes, creation to AwaitingCSR, external calls: {} DescribeInstances pages, {} S3 list pages, {} S3 HEADs, {} S3 PUTs, {} CA listings",
        launch[0], launch[1], launch[2], launch[3], launch[4]
    );

    // 2. The agents send their CSRs spread over 10 s, as booting instances do: CSR →
    // signed, in simulated time.
    let instances: Vec<_> = w.ec2.instances().into_iter().map(|f| f.instance).collect();
    let mut pending: Vec<(Duration, String, String)> = instances
        .iter()
        .enumerate()
        .map(|(k, i)| {
            let certname = i.tags[tags::CERTNAME].clone();
            let user_data = w.ec2.user_data(&i.id).unwrap();
            let (challenge, iid) = crate::agents::csr_attributes(&user_data, &i.id);
            let (pem, _) = crate::agents::csr(&certname, &challenge, &iid);
            (SPREAD * k as u32 / n as u32, certname, pem)
        })
        .collect();
    pending.reverse();
    let mut sent = BTreeMap::new();
    let start = Instant::now();
    let mut latencies = Vec::new();
    while latencies.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "CSRs not all signed"
        );
        while pending
            .last()
            .is_some_and(|(at, _, _)| *at <= start.elapsed())
        {
            let (_, certname, pem) = pending.pop().unwrap();
            w.ca.submit_csr(&certname, &pem).unwrap();
            sent.insert(certname, Instant::now());
        }
        w.sleep(Duration::from_millis(10)).await;
        for cert in w.ca.signed() {
            if let Some(at) = sent.remove(&cert.certname) {
                latencies.push(at.elapsed().as_secs_f64());
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "BENCH {n} nodes waiting, CSRs sent over {SPREAD:?}, CSR → signed (default pollInterval, simulated time): p50 {:.2} s, p99 {:.2} s [target ≤ 2 s], max {:.2} s",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );

    // 3. Every agent asks for its catalog (the ENC checks it in); then all are Ready.
    for i in &instances {
        let certname = &i.tags[tags::CERTNAME];
        puppet_conductor::enc::classify(w.records.as_ref(), certname, chrono::Utc::now())
            .await
            .unwrap();
    }
    w.until_all("Ready", n, Duration::from_secs(3600)).await;
    w.sleep(Duration::from_secs(30)).await;

    // 4. A full resync with nothing to do: every node fed again at once.
    let reconciled = w.total.load(Ordering::Relaxed);
    w.api.requests(true);
    let calls_before = w.external();
    let wall = std::time::Instant::now();
    w.relist();
    // No watch pumping here (nothing changes; the in-memory API's copies would be most
    // of the CPU): only the controller and the reconciles run.
    while w.total.load(Ordering::Relaxed) < reconciled + n as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let wall = wall.elapsed().as_secs_f64();
    // Let anything the passes set off finish (there should be nothing).
    w.sleep(Duration::from_secs(1)).await;
    let resync = diff(w.external(), calls_before);
    let kube = w.api.requests(true);
    let writes: u64 = kube
        .iter()
        .filter(|(call, _)| !is_read(call))
        .map(|(_, c)| *c)
        .sum();
    println!(
        "BENCH {n} nodes, full resync with nothing changed: Kubernetes {kube:?} ({writes} writes [target 0]; reads [target ≤ 100 at 10,000]); {} DescribeInstances pages [target ≤ 10 at 10,000], {} S3 list pages [target ≤ 10 at 10,000], {} S3 HEADs, {} S3 PUTs, {} CA listings [target ≤ 5] ({} CA calls)",
        resync[0], resync[1], resync[2], resync[3], resync[4], resync[5]
    );
    println!(
        "BENCH {n} nodes, no-op reconciles per second (wall time, debug build, the in-memory API and fakes in the same process): {:.0} [target ≥ 500]",
        n as f64 / wall
    );
    let rss = rss_kib();
    // What the node store holds, as JSON (the API's copy also has kubectl's annotation).
    let cached: usize = node_store
        .state()
        .iter()
        .filter_map(|n| n.0.as_ref().ok())
        .map(|node| serde_json::to_vec(node).map_or(0, |v| v.len()))
        .sum();
    drop(node_store);
    println!(
        "BENCH {n} nodes, RSS {:.1} MB after the run ({:.1} KB per node over the {:.1} MB before it; the in-memory API server, fakes and agents live in the same process), a cached node's JSON {:.2} KB [target ≤ 2 KB]",
        rss as f64 / 1024.0,
        (rss.saturating_sub(rss_before)) as f64 / n as f64,
        rss_before as f64 / 1024.0,
        cached as f64 / n as f64 / 1024.0
    );

    let signed = w.ca.signed();
    assert_eq!(signed.len(), n, "every node signed once");
    assert_eq!(w.ec2.instances().len(), n, "one instance per node");
    shutdown.cancel();
    let _ = run.await;
    let _ = watch.await;

    // What the snapshot's figure below is made of: its data as plain vectors (the rest is
    // the persistent maps' structure and the snapshot's indexes by id and node).
    let before = HEAP.allocated();
    let instances: Vec<puppet_conductor::cloud::Instance> =
        w.ec2.instances().into_iter().map(|i| i.instance).collect();
    let after_instances = HEAP.allocated();
    let certificates = puppet_conductor::ca::PuppetCa::list(w.ca.as_ref(), None)
        .await
        .unwrap();
    let after_ca = HEAP.allocated();
    let listing = puppet_conductor::records::Records::list(w.records.as_ref())
        .await
        .unwrap();
    let after_records = HEAP.allocated();
    let per_node = |bytes: usize| bytes as f64 / n as f64 / 1024.0;
    println!(
        "BENCH {n} nodes, the snapshot's data as plain vectors, per node: an instance {:.2} KB ({} tags), its CA entry {:.2} KB, its bucket objects {:.2} KB ({} records, {} check-ins, {} signature records)",
        per_node(after_instances.saturating_sub(before)),
        instances.first().map_or(0, |i| i.tags.len()),
        per_node(after_ca.saturating_sub(after_instances)),
        per_node(after_records.saturating_sub(after_ca)),
        listing.records.len(),
        listing.check_ins.len(),
        listing.signatures.len(),
    );
    drop((instances, certificates, listing));

    // 5. The operator's own memory: the live heap it frees when its context (snapshots,
    // caches, metrics, clients) and its watch stores go, the API and fakes kept.
    let with_operator = HEAP.allocated();
    let empty = |w: &mut World| {
        w.writer = reflector::store::<GuardedNode>().1;
        w.masters = reflector::store::<GuardedMaster>().1;
        w.secrets = reflector::store::<PartialObjectMeta<Secret>>().1;
    };
    empty(&mut w);
    let store_bytes = with_operator.saturating_sub(HEAP.allocated());
    ctx.snapshots.forget(&format!("{NS}/{MASTER}"));
    let snapshot_bytes = with_operator
        .saturating_sub(HEAP.allocated())
        .saturating_sub(store_bytes);
    drop(ctx);
    let operator_bytes = with_operator.saturating_sub(HEAP.allocated());
    let recorded = events.all().len();
    drop(events);
    let event_bytes = with_operator
        .saturating_sub(HEAP.allocated())
        .saturating_sub(operator_bytes);
    println!(
        "BENCH {n} nodes, the operator's own live heap: {:.1} MB [target RSS ≤ 40 MB at 10,000], {:.1} KB per node: the watch stores {:.1}, the master's snapshot {:.1}, the rest of its memory (per-node memos, certname owners, metrics, clients) {:.1}; measured as what each frees when dropped. Not in it: the {recorded} events the test recorded, {:.1} KB per node",
        operator_bytes as f64 / 1024.0 / 1024.0,
        per_node(operator_bytes),
        per_node(store_bytes),
        per_node(snapshot_bytes),
        per_node(operator_bytes.saturating_sub(store_bytes + snapshot_bytes)),
        per_node(event_bytes),
    );
}

#[test]
#[ignore = "benchmark: scripts/bench.sh runs it (PC_SCALE_NODES, default 1000)"]
fn fleet_scale_on_fakes() {
    let sizes = std::env::var("PC_SCALE_NODES").unwrap_or_else(|_| "1000".into());
    for n in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(n));
    }
}
