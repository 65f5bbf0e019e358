//! Helpers for the EC2 tests: clients for moto, a private moto server for
//! configurations the shared one does not have, an endpoint that answers
//! every request with the same canned response, and a few fixtures.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use puppet_conductor::cloud::{
    tags, CloudConfig, Ec2Cloud, InstanceSettings, LaunchRequest, RateLimits, StaticCredentials,
};

use crate::common::services::Services;
use crate::common::unique_certname;

/// The region the shared moto is used in.
pub const REGION: &str = "us-east-1";

/// moto's shared endpoint, or `None` (test skipped) without the services.
pub fn moto() -> Option<String> {
    Services::moto_endpoint_from_env()
}

/// Credentials moto accepts while it does not enforce auth.
pub fn test_credentials() -> StaticCredentials {
    StaticCredentials {
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        session_token: None,
    }
}

/// A config for moto: static test credentials, no rate limits, a generous
/// timeout (moto's tag filters take seconds once it holds a few hundred
/// tagged instances and volumes).
pub fn moto_config(endpoint: &str, region: &str) -> CloudConfig {
    CloudConfig {
        region: region.into(),
        endpoint: Some(endpoint.into()),
        credentials: Some(test_credentials()),
        call_timeout: Duration::from_secs(60),
        rate_limits: RateLimits::unlimited(),
    }
}

/// An [`Ec2Cloud`] on the shared moto.
pub async fn moto_cloud(endpoint: &str) -> Ec2Cloud {
    Ec2Cloud::new(&moto_config(endpoint, REGION)).await
}

/// A raw SDK client for what the operator never does (VPCs, user data reads).
pub async fn raw_client(endpoint: &str, region: &str) -> aws_sdk_ec2::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    aws_sdk_ec2::Client::new(&config)
}

/// A master key (`namespace/name`) no other test or earlier run uses.
pub fn unique_master(prefix: &str) -> String {
    tags::object_key("cloud-test", &unique_certname(prefix))
}

/// A VPC with one subnet in `zone` and one security group; returns (subnet, group).
pub async fn network(client: &aws_sdk_ec2::Client, zone: &str) -> (String, String) {
    let vpc = client
        .create_vpc()
        .cidr_block("10.77.0.0/16")
        .send()
        .await
        .expect("CreateVpc");
    let vpc_id = vpc
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_owned();
    let subnet = client
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.77.1.0/24")
        .availability_zone(zone)
        .send()
        .await
        .expect("CreateSubnet");
    let subnet_id = subnet
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_owned();
    let group = client
        .create_security_group()
        .group_name(unique_certname("sg"))
        .description("puppet-conductor cloud test")
        .vpc_id(&vpc_id)
        .send()
        .await
        .expect("CreateSecurityGroup");
    let group_id = group.group_id().expect("group id").to_owned();
    (subnet_id, group_id)
}

/// A launch request for node `node` of `master`, tagged like the reconciler does.
pub fn launch_request(master: &str, node: &str, incarnation: u32) -> LaunchRequest {
    let uid = format!("uid-{}", unique_certname("n"));
    let certname = format!("{}.nodes.test", node.replace('/', "-"));
    let tags: BTreeMap<String, String> = [
        (tags::OPERATOR, "cloud-test".to_owned()),
        (tags::MASTER, master.to_owned()),
        (tags::NODE, node.to_owned()),
        (tags::NODE_UID, uid.clone()),
        (tags::CERTNAME, certname),
        (tags::INCARNATION, incarnation.to_string()),
        (tags::NAME, node.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    LaunchRequest {
        instance: InstanceSettings::new("ami-12c6146b", "t3.micro"),
        tags,
        user_data: "#cloud-config\npuppet:\n  install: false\n".into(),
        client_token: format!("{uid}-{incarnation}"),
    }
}

/// A moto server of this test's own, started with `env`, killed on drop.
pub struct SpawnedMoto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl SpawnedMoto {
    /// Start `moto_server` (from `$PC_TOOLS_DIR`, as install.sh puts it) on a
    /// free port with `env` and wait until it answers.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let tools = std::env::var_os("PC_TOOLS_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/puppet-conductor/venv"))
            })
            .expect("PC_TOOLS_DIR or HOME");
        let bin = tools.join("bin/moto_server");
        assert!(
            bin.exists(),
            "{} not found; run tests/services/install.sh",
            bin.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("pc-cloud-moto-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("moto log file");
        let mut command = tokio::process::Command::new(&bin);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .kill_on_drop(true);
        let child = command.spawn().expect("spawning moto_server");
        let mut moto = Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        moto.wait_ready(Duration::from_secs(30)).await;
        moto
    }

    async fn wait_ready(&mut self, limit: Duration) {
        let http = reqwest::Client::new();
        let url = format!("{}/moto-api/", self.endpoint);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "moto_server exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok(response) = http.get(&url).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            assert!(
                start.elapsed() < limit,
                "moto_server did not answer within {limit:?}: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kill it now and wait for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The request id [`CannedEndpoint`] answers with (header and error document).
pub const CANNED_REQUEST_ID: &str = "canned-request-1";

/// An HTTP endpoint that answers every request with one canned response and
/// counts the requests: EC2 errors moto cannot produce (throttling, 5xx pages).
pub struct CannedEndpoint {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    requests: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CannedEndpoint {
    /// Answer `status` with `body` (of `content_type`) to everything.
    pub async fn start(status: u16, content_type: &'static str, body: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = heads.clone();
        let response = format!(
            "HTTP/1.1 {status} Canned\r\ncontent-type: {content_type}\r\n\
             x-amzn-requestid: {CANNED_REQUEST_ID}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let response = response.clone();
                let counter = counter.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    if let Ok(head) = answer(socket, &response).await {
                        recorded.lock().unwrap().push(head);
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            requests,
            heads,
            task,
        }
    }

    /// The request line and headers of every request answered so far.
    pub fn request_heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for CannedEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Read one request (headers and `content-length` body), write `response`;
/// returns the request line and headers.
async fn answer(mut socket: tokio::net::TcpStream, response: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 8192];
    let body_start = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..body_start]).into_owned();
    let length: usize = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < body_start + length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await?;
    Ok(head)
}

/// An EC2 query-protocol error document.
pub fn ec2_error_xml(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
         <Code>{code}</Code><Message>{message}</Message></Error></Errors>\
         <RequestID>{CANNED_REQUEST_ID}</RequestID></Response>"
    )
}

/// An empty DescribeInstances answer.
pub fn empty_describe_instances_xml() -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
         <requestId>{CANNED_REQUEST_ID}</requestId><reservationSet/></DescribeInstancesResponse>"
    )
}
