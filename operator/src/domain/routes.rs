//! Routes: under which host names and path prefixes each tenant's services may be reached from
//! outside the pool (pure). Tenants share host names (service.saarland.de) and split them by
//! path; admission lets a tenant use only what it holds (`isolation`).

use std::sync::Arc;

use kube::ResourceExt;

use crate::api::tenant::{GrantedRoute, Route, Tenant};

/// True when `path` lies under `prefix`, segment by segment: "/a" covers "/a" and "/a/b",
/// not "/ab". "/" covers everything.
pub fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A route a tenant declares that a senior tenant declares too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub route: Route,
    /// The tenant holding it.
    pub owner: String,
}

/// Whose claim to `route` comes first: a tenant already holding it (in its `status.routes`),
/// then the older Tenant, then the name. Holding comes first because creation times are whole
/// seconds: two tenants created within one second would otherwise be told apart by name alone,
/// and a newcomer could take a route in use.
fn seniority(tenant: &Tenant, route: &Route) -> (bool, Option<String>, String) {
    let holds = tenant.status.as_ref().is_some_and(|status| {
        status
            .routes
            .iter()
            .any(|held| held.host == route.host && held.path_prefix == route.path_prefix)
    });
    (
        !holds,
        tenant
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        tenant.name_any(),
    )
}

/// The routes `tenant` holds among `tenants` (all of them, itself included): each route it
/// declares, minus the longer prefixes other tenants declare inside it. Err when a senior
/// tenant declares one of its routes exactly: a URL has one owner.
pub fn granted(tenant: &Tenant, tenants: &[Arc<Tenant>]) -> Result<Vec<GrantedRoute>, Taken> {
    let name = tenant.name_any();
    let others: Vec<&Arc<Tenant>> = tenants.iter().filter(|t| t.name_any() != name).collect();
    let mut routes = Vec::new();
    for route in &tenant.spec.routes {
        if let Some(senior) = others.iter().find(|other| {
            other.spec.routes.contains(route) && seniority(other, route) < seniority(tenant, route)
        }) {
            return Err(Taken {
                route: route.clone(),
                owner: senior.name_any(),
            });
        }
        let mut except: Vec<String> = others
            .iter()
            .flat_map(|other| other.spec.routes.iter())
            .filter(|r| {
                r.host == route.host
                    && r.path_prefix != route.path_prefix
                    && under(&r.path_prefix, &route.path_prefix)
            })
            .map(|r| r.path_prefix.clone())
            .collect();
        except.sort();
        except.dedup();
        routes.push(GrantedRoute {
            host: route.host.clone(),
            path_prefix: route.path_prefix.clone(),
            except,
        });
    }
    routes.sort_by(|a, b| (&a.host, &a.path_prefix).cmp(&(&b.host, &b.path_prefix)));
    routes.dedup();
    Ok(routes)
}

/// True when `host` and `path` lie in one of `routes`.
pub fn allows(routes: &[GrantedRoute], host: &str, path: &str) -> bool {
    routes.iter().any(|r| {
        r.host == host && under(path, &r.path_prefix) && !r.except.iter().any(|e| under(path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use serde_json::json;

    fn tenant(name: &str, created: &str, routes: serde_json::Value) -> Arc<Tenant> {
        let mut t = testing::tenant(name, &[name], json!({ "routes": routes }));
        t.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            created.parse().expect("timestamp"),
        ));
        Arc::new(t)
    }

    #[test]
    fn paths_are_matched_segment_by_segment() {
        assert!(under("/saarbruecken/wohnsitz", "/saarbruecken"));
        assert!(under("/saarbruecken", "/saarbruecken"));
        assert!(!under("/saarbrueckenx", "/saarbruecken"));
        assert!(under("/anything", "/"));
    }

    #[test]
    fn a_shared_host_is_split_by_path_and_the_longer_prefix_is_carved_out() {
        let land = tenant(
            "land",
            "2026-01-01T00:00:00Z",
            json!([{ "host": "service.saarland.de", "pathPrefix": "/" }]),
        );
        let sb = tenant(
            "sb",
            "2026-02-01T00:00:00Z",
            json!([{ "host": "service.saarland.de", "pathPrefix": "/saarbruecken" }]),
        );
        let all = vec![land.clone(), sb.clone()];
        let for_land = granted(&land, &all).expect("granted");
        assert_eq!(for_land[0].except, vec!["/saarbruecken".to_string()]);
        assert!(allows(&for_land, "service.saarland.de", "/"));
        assert!(allows(&for_land, "service.saarland.de", "/saarbrueckenx"));
        assert!(!allows(
            &for_land,
            "service.saarland.de",
            "/saarbruecken/kfz"
        ));
        let for_sb = granted(&sb, &all).expect("granted");
        assert!(allows(&for_sb, "service.saarland.de", "/saarbruecken/kfz"));
        assert!(!allows(&for_sb, "service.saarland.de", "/"));
        assert!(!allows(
            &for_sb,
            "servicekonto.saarland.de",
            "/saarbruecken"
        ));
    }

    #[test]
    fn the_same_route_belongs_to_the_senior_tenant() {
        let route = json!([{ "host": "service.saarland.de", "pathPrefix": "/kfz" }]);
        let first = tenant("first", "2026-01-01T00:00:00Z", route.clone());
        let second = tenant("second", "2026-03-01T00:00:00Z", route);
        let all = vec![first.clone(), second.clone()];
        assert!(granted(&first, &all).is_ok());
        let taken = granted(&second, &all).expect_err("taken");
        assert_eq!(taken.owner, "first");
        assert_eq!(taken.route.path_prefix, "/kfz");
    }

    #[test]
    fn a_route_in_use_stays_with_its_holder_even_against_a_tenant_of_the_same_second() {
        let route = json!([{ "host": "service.saarland.de", "pathPrefix": "/kfz" }]);
        let second = "2026-01-01T00:00:00Z";
        let holder = tenant("zweckverband", second, route.clone());
        let newcomer = tenant("amt", second, route);
        // Neither holds it yet: the name decides.
        let all = vec![holder.clone(), newcomer.clone()];
        assert_eq!(granted(&holder, &all).expect_err("taken").owner, "amt");
        // Once one holds it, it keeps it.
        let mut held = (*holder).clone();
        held.status = Some(crate::api::tenant::TenantStatus {
            routes: granted(&held, std::slice::from_ref(&holder)).expect("alone"),
            ..Default::default()
        });
        let held = Arc::new(held);
        let all = vec![held.clone(), newcomer.clone()];
        assert!(granted(&held, &all).is_ok());
        assert_eq!(
            granted(&newcomer, &all).expect_err("taken").owner,
            "zweckverband"
        );
    }
}
