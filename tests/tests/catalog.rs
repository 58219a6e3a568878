//! The gRPC catalogue on the simulated pool with the Saarland example, as portals call it:
//! with a tonic client and with `grpcurl` (the real client, from the test bed), in plain text,
//! over TLS and over mutual TLS, each served by its own replica of the operator (one leads,
//! two follow; every replica serves the catalogue from its caches).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use verbund_operator::api::PortalService;
use verbund_operator::catalog::proto::service_catalog_client::ServiceCatalogClient;
use verbund_operator::catalog::proto::service_event::Type;
use verbund_operator::catalog::proto::{
    GetPoolCapacityRequest, GetServiceRequest, ListServicesRequest, ServiceEvent, ServiceFilter,
    TrustLevel, WatchServicesRequest,
};
use verbund_tests::control_plane::free_port;
use verbund_tests::operator::OperatorProcess;
use verbund_tests::{cluster, crds, examples, operator_binary, pki, tools, wait};

const TIMEOUT: Duration = Duration::from_secs(300);
/// Where the operator's account may keep its lease (`identity::operator_kubeconfig`).
const LEASE_NAMESPACE: &str = verbund_tests::identity::NAMESPACE;

/// The example's services with a catalogue entry: (namespace/name, the entry).
fn example_entries() -> Vec<(String, serde_json::Value)> {
    examples::saarland()
        .iter()
        .filter(|d| d.kind() == "PortalService")
        .filter_map(|d| {
            let catalog = d.value["spec"]["catalog"].clone();
            (!catalog.is_null()).then(|| {
                (
                    format!("{}/{}", d.namespace().unwrap_or_default(), d.name()),
                    catalog,
                )
            })
        })
        .collect()
}

async fn start_replica(kubeconfig: &Path, name: &str, extra: &[String]) -> (OperatorProcess, u16) {
    let port = free_port().expect("port");
    let mut args: Vec<String> = vec![
        "--leader-elect".into(),
        format!("--instance={name}"),
        format!("--lease-namespace={LEASE_NAMESPACE}"),
        format!("--catalog-addr=127.0.0.1:{port}"),
    ];
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut replica = OperatorProcess::start(operator_binary!(), kubeconfig, &args)
        .await
        .expect("replica starts");
    replica.await_ready(TIMEOUT).await.expect("replica ready");
    (replica, port)
}

fn filter(f: ServiceFilter) -> ListServicesRequest {
    ListServicesRequest {
        filter: Some(f),
        ..Default::default()
    }
}

async fn names(
    client: &mut ServiceCatalogClient<Channel>,
    request: ListServicesRequest,
) -> BTreeSet<String> {
    client
        .list_services(request)
        .await
        .expect("list")
        .into_inner()
        .services
        .into_iter()
        .map(|s| s.name)
        .collect()
}

async fn next_event(stream: &mut tonic::Streaming<ServiceEvent>) -> ServiceEvent {
    tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

async fn grpcurl(args: &[&str]) -> std::process::Output {
    let bin = tools::bin_dir().expect("tools").join("grpcurl");
    tokio::process::Command::new(&bin)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn portals_read_and_watch_the_catalogue() {
    let pool = cluster::shared().await;
    let client = pool.client().await;
    crds::ensure_installed(&client).await;
    let kubeconfig = verbund_tests::operator::as_operator(pool.kubeconfig_path())
        .await
        .expect("the operator's account");

    // The plain-text replica starts first and leads; the example converges under it.
    let (plain, port) = start_replica(&kubeconfig, "plain", &[]).await;
    examples::apply_saarland(pool, TIMEOUT).await;
    let expected: BTreeSet<String> = example_entries().into_iter().map(|(n, _)| n).collect();

    // A replica started now says SERVING only once its catalogue holds the whole pool: every
    // answer before that is NOT_SERVING.
    let late_port = free_port().expect("port");
    let args = [
        "--leader-elect".to_string(),
        "--instance=late".to_string(),
        format!("--lease-namespace={LEASE_NAMESPACE}"),
        format!("--catalog-addr=127.0.0.1:{late_port}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let late = OperatorProcess::start(operator_binary!(), &kubeconfig, &args)
        .await
        .expect("starts");
    let late_url = format!("http://127.0.0.1:{late_port}");
    let mut answers = Vec::new();
    let started = std::time::Instant::now();
    loop {
        if let Ok(channel) = Channel::from_shared(late_url.clone())
            .expect("url")
            .connect()
            .await
        {
            let status = HealthClient::new(channel.clone())
                .check(HealthCheckRequest {
                    service: "verbund.catalog.v1.ServiceCatalog".into(),
                })
                .await
                .map(|r| r.into_inner().status);
            if let Ok(status) = status {
                answers.push(status);
                if status == ServingStatus::Serving as i32 {
                    let listed = names(
                        &mut ServiceCatalogClient::new(channel),
                        ListServicesRequest::default(),
                    )
                    .await;
                    assert_eq!(
                        listed, expected,
                        "SERVING before the catalogue was complete"
                    );
                    break;
                }
                assert_eq!(status, ServingStatus::NotServing as i32);
            }
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "never SERVING ({} answers); log:\n{}",
            answers.len(),
            late.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "health of a starting replica: {} answers NOT_SERVING, then SERVING with {} services",
        answers.len() - 1,
        expected.len()
    );
    late.signal("TERM").await.expect("SIGTERM");
    let (status, log) = late.wait(Duration::from_secs(30)).await.expect("stops");
    assert!(status.success(), "{log}");

    let url = format!("http://127.0.0.1:{port}");
    let channel = Channel::from_shared(url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut catalog = ServiceCatalogClient::new(channel);

    // Each filter, against what the example says.
    let entries = example_entries();
    let of = |pred: &dyn Fn(&serde_json::Value) -> bool| -> BTreeSet<String> {
        entries
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let saarbruecken = names(
        &mut catalog,
        filter(ServiceFilter {
            tenant: "lhs-saarbruecken".into(),
            ..Default::default()
        }),
    )
    .await;
    assert!(!saarbruecken.is_empty());
    assert!(
        saarbruecken.iter().all(|n| n.starts_with("sb-")),
        "{saarbruecken:?}"
    );
    let by_key = names(
        &mut catalog,
        filter(ServiceFilter {
            service_key: "99005006012000".into(),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(by_key, of(&|c| c["serviceKey"] == "99005006012000"));
    assert_eq!(
        by_key.len(),
        2,
        "two universities offer the application service"
    );
    let in_land = names(
        &mut catalog,
        filter(ServiceFilter {
            regional_key: "10".into(),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(
        in_land, expected,
        "every example service serves the Saarland"
    );
    let outside = names(
        &mut catalog,
        filter(ServiceFilter {
            regional_key: "09".into(),
            ..Default::default()
        }),
    )
    .await;
    assert!(outside.is_empty(), "{outside:?}");
    let low = names(
        &mut catalog,
        filter(ServiceFilter {
            trust_level: TrustLevel::Low as i32,
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(low, of(&|c| c["trustLevel"] == "Low"));
    let english = names(
        &mut catalog,
        filter(ServiceFilter {
            language: "en".into(),
            ..Default::default()
        }),
    )
    .await;
    assert_eq!(
        english,
        of(&|c| c["languages"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == "en")))
    );

    // Paging: pages of two cover every service once, in a stable order.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let page = catalog
            .list_services(ListServicesRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert_eq!(page.total_size as usize, expected.len());
        paged.extend(page.services.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut sorted = paged.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(paged, sorted, "stable order, no duplicates");
    assert_eq!(paged.into_iter().collect::<BTreeSet<_>>(), expected);

    // Get, not found, and bad requests naming their field.
    let first = expected.iter().next().expect("an entry").clone();
    let got = catalog
        .get_service(GetServiceRequest {
            name: first.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.name, first);
    let availability = got.availability.expect("availability");
    assert!(
        availability.ready && availability.ready_replicas > 0 && !availability.sites.is_empty()
    );
    let missing = catalog
        .get_service(GetServiceRequest {
            name: "sb-kfz/gibt-es-nicht".into(),
        })
        .await
        .expect_err("not found");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    for (request, field) in [
        (
            filter(ServiceFilter {
                regional_key: "1".into(),
                ..Default::default()
            }),
            "filter.regional_key",
        ),
        (
            ListServicesRequest {
                page_size: 10_000,
                ..Default::default()
            },
            "page_size",
        ),
        (
            ListServicesRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let refused = catalog.list_services(request).await.expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused.message().starts_with(field),
            "{}",
            refused.message()
        );
    }
    let bad_name = catalog
        .get_service(GetServiceRequest {
            name: "ohne-namespace".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(bad_name.code(), tonic::Code::InvalidArgument);
    assert!(
        bad_name.message().starts_with("name"),
        "{}",
        bad_name.message()
    );

    // The sites' figures follow their pods a few seconds behind (status figures are paced).
    let capacity = wait::until(TIMEOUT, "the pool's requested CPU", || {
        let mut catalog = catalog.clone();
        async move {
            let capacity = catalog
                .get_pool_capacity(GetPoolCapacityRequest {})
                .await
                .expect("capacity")
                .into_inner();
            let requested = capacity.requested.unwrap_or_default();
            if requested.cpu_cores > 0.0 {
                Ok(capacity)
            } else {
                Err(capacity)
            }
        }
    })
    .await;
    assert_eq!(capacity.sites.len(), 3);
    let total = capacity.allocatable.expect("allocatable");
    assert!(total.cpu_cores > 0.0 && total.pods > 0);
    let free = capacity.free.expect("free");
    let requested = capacity.requested.expect("requested");
    assert!((free.cpu_cores - (total.cpu_cores - requested.cpu_cores)).abs() < 1e-6);

    watch_sees_changes_and_resumes(&client, &mut catalog).await;
    grpcurl_works_without_proto_files(port).await;
    tls_and_mutual_tls(&kubeconfig, &expected).await;

    // Shutting down, a replica tells its watchers to resume elsewhere (UNAVAILABLE, the
    // standard retryable code) rather than cutting them off.
    let mut watch = catalog
        .watch_services(WatchServicesRequest::default())
        .await
        .expect("watch")
        .into_inner();
    plain.signal("TERM").await.expect("stop");
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends with the shutdown");
    let status = ended.expect_err("ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("resume"), "{status:?}");
    let (status, log) = plain.wait(Duration::from_secs(30)).await.expect("stops");
    assert!(status.success(), "the leader stops cleanly: {log}");
}

async fn watch_sees_changes_and_resumes(
    client: &kube::Client,
    catalog: &mut ServiceCatalogClient<Channel>,
) {
    let only_nk = ServiceFilter {
        tenant: "kreisstadt-neunkirchen".into(),
        ..Default::default()
    };
    let mut stream = catalog
        .watch_services(WatchServicesRequest {
            filter: Some(only_nk.clone()),
            resume_revision: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut snapshot = BTreeSet::new();
    let end = loop {
        let event = next_event(&mut stream).await;
        match Type::try_from(event.r#type) {
            Ok(Type::Snapshot) => {
                snapshot.insert(event.service.expect("service").name);
            }
            Ok(Type::SnapshotEnd) => break event.revision,
            other => panic!("unexpected event in the snapshot: {other:?}"),
        }
    };
    assert!(
        snapshot.iter().all(|n| n.starts_with("nk-")) && !snapshot.is_empty(),
        "{snapshot:?}"
    );

    let services: Api<PortalService> = Api::namespaced(client.clone(), "nk-buergerdienste");
    let created: PortalService = serde_json::from_value(json!({
        "apiVersion": "verbund.saarland.de/v1alpha1", "kind": "PortalService",
        "metadata": { "name": "sperrmuell", "namespace": "nk-buergerdienste" },
        "spec": {
            "image": "registry.saarland.de/kommunal/sperrmuell:1.0.0",
            "ports": [{ "name": "http", "port": 8080 }],
            "catalog": { "serviceKey": "99014005000000", "title": "Sperrmüll anmelden",
                         "responsibleAuthority": "Entsorgungsbetrieb Neunkirchen",
                         "regionalKeys": ["100430111111"], "accessibility": "Full",
                         "trustLevel": "Low" }
        }
    }))
    .expect("service");
    services
        .create(&Default::default(), &created)
        .await
        .expect("create");
    let added = loop {
        let event = next_event(&mut stream).await;
        if event
            .service
            .as_ref()
            .is_some_and(|s| s.name == "nk-buergerdienste/sperrmuell")
        {
            break event;
        }
    };
    assert_eq!(added.r#type, Type::Added as i32);
    assert!(added.revision > end);

    let patch = json!({ "spec": { "catalog": { "title": "Sperrmüll und Grünschnitt anmelden" } } });
    services
        .patch("sperrmuell", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    let modified = loop {
        let event = next_event(&mut stream).await;
        if event.r#type == Type::Modified as i32
            && event
                .service
                .as_ref()
                .is_some_and(|s| s.title == "Sperrmüll und Grünschnitt anmelden")
        {
            break event;
        }
    };
    services
        .delete("sperrmuell", &DeleteParams::default())
        .await
        .expect("delete");
    let deleted = loop {
        let event = next_event(&mut stream).await;
        if event.r#type == Type::Deleted as i32 {
            break event;
        }
    };
    assert_eq!(
        deleted.service.expect("name").name,
        "nk-buergerdienste/sperrmuell"
    );

    // Resuming from the modification replays what came after it, and no snapshot.
    let mut resumed = catalog
        .watch_services(WatchServicesRequest {
            filter: Some(only_nk),
            resume_revision: modified.revision,
        })
        .await
        .expect("resume")
        .into_inner();
    let replayed = loop {
        let event = next_event(&mut resumed).await;
        assert_ne!(
            event.r#type,
            Type::Snapshot as i32,
            "a resume is no snapshot"
        );
        if event.r#type == Type::Deleted as i32 {
            break event;
        }
    };
    assert_eq!(replayed.revision, deleted.revision);
}

async fn grpcurl_works_without_proto_files(port: u16) {
    let addr = format!("127.0.0.1:{port}");
    let listed = grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(listed.status.success(), "{}", text(&listed));
    let services = String::from_utf8_lossy(&listed.stdout);
    assert!(
        services.contains("verbund.catalog.v1.ServiceCatalog"),
        "{services}"
    );
    assert!(services.contains("grpc.health.v1.Health"), "{services}");

    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]).await;
    assert!(text(&health).contains("SERVING"), "{}", text(&health));

    let listed = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"filter": {"regionalKey": "10041"}}"#,
        &addr,
        "verbund.catalog.v1.ServiceCatalog/ListServices",
    ])
    .await;
    assert!(listed.status.success(), "{}", text(&listed));
    let answer: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let services = answer["services"].as_array().expect("services");
    assert!(!services.is_empty());
    let listed: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
    // The Regionalverband Saarbrücken (10041) holds the state capital (its services) and lies
    // in the Land (the universities' Land-wide services); Neunkirchen (10043) and St. Ingbert
    // (10045) lie elsewhere.
    assert!(listed.iter().any(|n| n.starts_with("sb-")), "{listed:?}");
    assert!(
        listed.contains(&"uds-studienportal/studienbewerbung"),
        "{listed:?}"
    );
    assert!(
        !listed
            .iter()
            .any(|n| n.starts_with("nk-") || n.starts_with("igb-")),
        "{listed:?}"
    );

    let refused = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"filter": {"serviceKey": "123"}}"#,
        &addr,
        "verbund.catalog.v1.ServiceCatalog/ListServices",
    ])
    .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("InvalidArgument") && text(&refused).contains("filter.service_key"),
        "{}",
        text(&refused)
    );
}

async fn tls_and_mutual_tls(kubeconfig: &Path, expected: &BTreeSet<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = pki::write(&folder(dir.path().join("ours"))).expect("pki");
    let theirs = pki::write(&folder(dir.path().join("theirs"))).expect("other pki");
    let path = |p: &Path| p.to_string_lossy().to_string();

    let (tls, tls_port) = start_replica(
        kubeconfig,
        "tls",
        &[
            format!("--catalog-tls-cert={}", path(&ours.serving_cert)),
            format!("--catalog-tls-key={}", path(&ours.serving_key)),
            format!("--catalog-rate={LIMITED_RATE}"),
        ],
    )
    .await;
    // The mutual-TLS replica reads its files from a folder whose contents are renewed below,
    // as a Secret volume's are.
    let live = folder(dir.path().join("live"));
    let (live_cert, live_key, live_ca) = (
        live.join("tls.crt"),
        live.join("tls.key"),
        live.join("ca.crt"),
    );
    let install = |from: &pki::Pki| {
        for (source, target) in [
            (&from.serving_cert, &live_cert),
            (&from.serving_key, &live_key),
            (&from.ca_cert, &live_ca),
        ] {
            // Written aside and renamed: a reader never sees half a file.
            let aside = target.with_extension("new");
            std::fs::copy(source, &aside).expect("copy");
            std::fs::rename(&aside, target).expect("rename");
        }
    };
    install(&ours);
    let (mtls, mtls_port) = start_replica(
        kubeconfig,
        "mtls",
        &[
            format!("--catalog-tls-cert={}", path(&live_cert)),
            format!("--catalog-tls-key={}", path(&live_key)),
            format!("--catalog-client-ca={}", path(&live_ca)),
        ],
    )
    .await;
    let connect_to = |port: u16, trusted: &Path, identity: Option<(&Path, &Path)>| {
        let ca = Certificate::from_pem(std::fs::read(trusted).expect("ca"));
        let mut config = ClientTlsConfig::new()
            .ca_certificate(ca)
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            config = config.identity(Identity::from_pem(
                std::fs::read(cert).expect("cert"),
                std::fs::read(key).expect("key"),
            ));
        }
        async move {
            let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
                .expect("url")
                .tls_config(config)
                .expect("tls config")
                .connect()
                .await?;
            Ok::<_, tonic::transport::Error>(ServiceCatalogClient::new(channel))
        }
    };
    let connect =
        |port: u16, identity: Option<(&Path, &Path)>| connect_to(port, &ours.ca_cert, identity);
    let until_filled = |mut client: ServiceCatalogClient<Channel>| async move {
        wait::until(TIMEOUT, "the follower's catalogue", || {
            let mut client = client.clone();
            async move {
                let listed = names(&mut client, ListServicesRequest::default()).await;
                if &listed == expected {
                    Ok(())
                } else {
                    Err(listed)
                }
            }
        })
        .await;
        client
            .get_pool_capacity(GetPoolCapacityRequest {})
            .await
            .expect("capacity");
    };

    // TLS: the server proves itself; any client may read.
    let client = connect(tls_port, None).await.expect("TLS");
    until_filled(client).await;
    limits_hold(connect(tls_port, None).await.expect("TLS")).await;
    // Mutual TLS: a client certificate of the configured CA is required.
    let client = connect(mtls_port, Some((&ours.admin_cert, &ours.admin_key)))
        .await
        .expect("mTLS with a client certificate");
    until_filled(client).await;
    for (what, identity) in [
        ("no client certificate", None),
        (
            "a certificate of another CA",
            Some((theirs.admin_cert.as_path(), theirs.admin_key.as_path())),
        ),
    ] {
        let refused = match connect(mtls_port, identity).await {
            Err(_) => true,
            Ok(mut client) => client
                .list_services(ListServicesRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "a client with {what} must be refused");
    }
    // Renewed files are taken up without a restart: the server now proves itself with the
    // other CA's certificate and accepts only that CA's clients.
    install(&theirs);
    wait::until(
        tls_reload_timeout(),
        "the renewed certificate taken up",
        || {
            let connected = connect_to(
                mtls_port,
                &theirs.ca_cert,
                Some((&theirs.admin_cert, &theirs.admin_key)),
            );
            async move {
                let mut client = connected.await.map_err(|e| format!("{e:?}"))?;
                client
                    .list_services(ListServicesRequest::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            }
        },
    )
    .await;
    let old_client = match connect(mtls_port, Some((&ours.admin_cert, &ours.admin_key))).await {
        Err(_) => true,
        Ok(mut client) => client
            .list_services(ListServicesRequest::default())
            .await
            .is_err(),
    };
    assert!(
        old_client,
        "after the renewal, the old CA's client and server certificates are no longer accepted"
    );
    // Plain text to a TLS port gets nothing.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{tls_port}"))
        .expect("url")
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            ServiceCatalogClient::new(channel)
                .list_services(ListServicesRequest::default())
                .await
                .is_err()
        );
    }
    for replica in [tls, mtls] {
        replica.signal("TERM").await.expect("SIGTERM");
        let (status, log) = replica.wait(Duration::from_secs(30)).await.expect("stops");
        assert!(status.success(), "a follower stops cleanly: {log}");
    }
}

/// The request rate the TLS replica allows one client address.
const LIMITED_RATE: u32 = 20;

/// A client sending faster than `--catalog-rate` is told to slow down, and served again a
/// moment later; a request above the size limit is refused, naming the limit.
async fn limits_hold(client: ServiceCatalogClient<Channel>) {
    let burst = 10 * LIMITED_RATE as usize;
    let answers = futures::future::join_all((0..burst).map(|_| {
        let mut client = client.clone();
        async move { client.get_pool_capacity(GetPoolCapacityRequest {}).await }
    }))
    .await;
    let exhausted = answers
        .iter()
        .filter(|a| matches!(a, Err(s) if s.code() == tonic::Code::ResourceExhausted))
        .count();
    let served = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(
        exhausted + served,
        burst,
        "only OK or RESOURCE_EXHAUSTED: {:?}",
        answers
            .iter()
            .find(|a| matches!(a, Err(s) if s.code() != tonic::Code::ResourceExhausted))
    );
    assert!(
        served >= LIMITED_RATE as usize && exhausted > 0,
        "a burst of {burst} at --catalog-rate={LIMITED_RATE}: {served} served, {exhausted} refused"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .clone()
        .get_pool_capacity(GetPoolCapacityRequest {})
        .await
        .expect("served again after a pause");

    let oversized = ListServicesRequest {
        filter: Some(ServiceFilter {
            service_key: "9".repeat(100 * 1024),
            ..Default::default()
        }),
        ..Default::default()
    };
    let refused = client
        .clone()
        .list_services(oversized)
        .await
        .expect_err("a request above the size limit");
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("limit"), "{refused:?}");
}

/// A few looks at the files, and the handshake.
fn tls_reload_timeout() -> Duration {
    verbund_operator::catalog::tls::RELOAD_EVERY * 4
}

fn folder(path: std::path::PathBuf) -> std::path::PathBuf {
    std::fs::create_dir_all(&path).expect("folder");
    path
}
