//! The public directory of the online services: one read-only HTML page, served on its own
//! port (`--directory-addr`), for citizens who look for a service without the portal.
//!
//! The page is plain semantic HTML5 in German: no script, no external resource, styles inline
//! only, so it works in any browser, with any assistive technology, and under a strict
//! Content-Security-Policy. A search (`GET /?q=…`) matches title, summary, Leistungsschlüssel,
//! responsible authority and the names of the regions served, ignoring case and the spelling
//! of umlauts ("Saarbruecken" finds "Saarbrücken"). Each service shows whether it can be used
//! right now, in words and with a symbol, never by colour alone.
//!
//! Until the catalogue has synced, `/` answers 503 with a short page. `/healthz` answers "ok".

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::book::Book;
use super::entry::{Filter, Page, region};
use super::proto;

/// The longest search, in characters; a longer one is cut, never refused.
pub const MAX_QUERY_CHARS: usize = 200;

/// The page's Content-Security-Policy: nothing but its own inline styles.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const TITLE: &str = "Online-Dienste im Saarland";

#[derive(Clone)]
struct PageState {
    book: Arc<Book>,
    synced: CancellationToken,
}

/// The page's routes: `/` and `/healthz`, GET and HEAD only.
pub fn router(book: Arc<Book>, synced: CancellationToken) -> Router {
    Router::new()
        .route("/", get(directory))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .layer(middleware::map_response(secure))
        .with_state(PageState { book, synced })
}

/// Serves the page on `listener` until `shutdown`, letting requests in flight finish; `/`
/// answers 503 until `synced` is cancelled (the catalogue is filled).
pub async fn serve(
    listener: TcpListener,
    book: Arc<Book>,
    synced: CancellationToken,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    info!(addr = %listener.local_addr()?, "directory page listening");
    axum::serve(listener, router(book, synced))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("directory page server failed")
}

/// The headers every answer carries: no script, no framing, no sniffing, no caching.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

async fn directory(State(state): State<PageState>, uri: Uri) -> Response {
    if !state.synced.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Html(loading_page()),
        )
            .into_response();
    }
    let query = search_query(uri.query().unwrap_or_default());
    let all = Page {
        size: usize::MAX,
        after: None,
    };
    let (services, _, _) = state.book.list(&Filter::default(), &all);
    Html(render(&services, &query)).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(short_page(
            "Seite nicht gefunden",
            "Diese Seite gibt es nicht. Alle Online-Dienste finden Sie auf der \
             <a href=\"/\">Startseite des Verzeichnisses</a>.",
        )),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Text: escaping, the search query, matching.

/// `text` safe inside HTML text and inside a quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The `q` parameter of a form-encoded query string, decoded and cut to [`MAX_QUERY_CHARS`].
/// Anything malformed is taken as literally as possible, never refused.
pub fn search_query(raw: &str) -> String {
    let value = raw
        .split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(name) == "q").then_some(value)
        })
        .next()
        .unwrap_or_default();
    form_decode(value).chars().take(MAX_QUERY_CHARS).collect()
}

/// Decodes `application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte; invalid UTF-8
/// becomes U+FFFD.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` for comparing: lower case, umlauts and ß spelled out ("Straße" and "STRASSE" and
/// "strasse" are the same, as are "Saarbrücken" and "Saarbruecken").
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'ß' => out.push_str("ss"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `service` matches every word of `query` (an empty query matches everything): in
/// its title, summary, Leistungsschlüssel, responsible authority or the names of its regions.
pub fn matches(service: &proto::Service, query: &str) -> bool {
    let query = fold(query);
    let mut words = query.split_whitespace().peekable();
    if words.peek().is_none() {
        return true;
    }
    let mut haystack = [
        service.title.as_str(),
        service.summary.as_str(),
        service.service_key.as_str(),
        service.responsible_authority.as_str(),
    ]
    .join("\n");
    for key in &service.regional_keys {
        for name in region_search_names(key) {
            haystack.push('\n');
            haystack.push_str(name);
        }
    }
    let haystack = fold(&haystack);
    words.all(|word| haystack.contains(word))
}

/// The services of `services` that match `query`, by title.
pub fn search<'a>(services: &'a [proto::Service], query: &str) -> Vec<&'a proto::Service> {
    let mut found: Vec<&proto::Service> = services.iter().filter(|s| matches(s, query)).collect();
    found.sort_by_cached_key(|s| (fold(&s.title), s.name.clone()));
    found
}

// ---------------------------------------------------------------------------------------------
// Names: regions, languages, accessibility, login.

/// The Land, by the first two digits of the Amtlicher Regionalschlüssel.
const LAND: (&str, &str) = ("10", "Saarland");

/// The Kreise of the Saarland (and the Regionalverband), by their five-digit ARS prefix.
const KREISE: [(&str, &str); 6] = [
    ("10041", "Regionalverband Saarbrücken"),
    ("10042", "Landkreis Merzig-Wadern"),
    ("10043", "Landkreis Neunkirchen"),
    ("10044", "Landkreis Saarlouis"),
    ("10045", "Saarpfalz-Kreis"),
    ("10046", "Landkreis St. Wendel"),
];

/// Gemeinden whose services the pool runs, by their 12-digit ARS.
const GEMEINDEN: [(&str, &str); 3] = [
    ("100410100100", "Landeshauptstadt Saarbrücken"),
    ("100430111111", "Kreisstadt Neunkirchen"),
    ("100450117117", "Stadt St. Ingbert"),
];

fn kreis(key: &str) -> Option<&'static str> {
    let prefix = key.get(..5)?;
    KREISE
        .iter()
        .find(|(k, _)| *k == prefix)
        .map(|(_, name)| *name)
}

fn gemeinde(key: &str) -> Option<&'static str> {
    GEMEINDEN
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, name)| *name)
}

/// The names a search finds a regional key by: its Gemeinde (when known), its Kreis, or the
/// Land for a Land-wide key.
fn region_search_names(key: &str) -> Vec<&'static str> {
    let level = region(key);
    if level == LAND.0 {
        return vec![LAND.1];
    }
    gemeinde(key).into_iter().chain(kreis(key)).collect()
}

/// A regional key as people name it: "Landeshauptstadt Saarbrücken (Regionalverband
/// Saarbrücken)", "Saarpfalz-Kreis", "Saarland (landesweit)"; a Gemeinde not known here by
/// its Kreis; a key outside the Saarland by itself.
pub fn region_name(key: &str) -> String {
    let level = region(key);
    if level == LAND.0 {
        return format!("{} (landesweit)", LAND.1);
    }
    match (gemeinde(key), kreis(key)) {
        (Some(gemeinde), Some(kreis)) => format!("{gemeinde} ({kreis})"),
        (Some(gemeinde), None) => gemeinde.to_string(),
        (None, Some(kreis)) => kreis.to_string(),
        (None, None) if level.starts_with(LAND.0) => LAND.1.to_string(),
        (None, None) => format!("Regionalschlüssel {key}"),
    }
}

/// A language tag in German ("de" is "Deutsch"); an unknown tag as it is.
pub fn language_name(tag: &str) -> &str {
    match tag.split('-').next().unwrap_or(tag) {
        "de" => "Deutsch",
        "en" => "Englisch",
        "fr" => "Französisch",
        "tr" => "Türkisch",
        "ar" => "Arabisch",
        _ => tag,
    }
}

/// The BITV 2.0 status in words.
pub fn accessibility_text(value: i32) -> &'static str {
    match proto::Accessibility::try_from(value) {
        Ok(proto::Accessibility::Full) => "barrierefrei",
        Ok(proto::Accessibility::Partial) => "teilweise barrierefrei",
        Ok(proto::Accessibility::None) => "nicht barrierefrei",
        _ => "keine Angabe",
    }
}

/// The login a service needs, in words.
pub fn trust_level_text(value: i32) -> &'static str {
    match proto::TrustLevel::try_from(value) {
        Ok(proto::TrustLevel::Low) => "Benutzername und Passwort (eIDAS niedrig)",
        Ok(proto::TrustLevel::Substantial) => "z. B. ELSTER-Zertifikat (eIDAS substanziell)",
        Ok(proto::TrustLevel::High) => "Online-Ausweis (eIDAS hoch)",
        _ => "keine Angabe",
    }
}

/// "1 Dienst gefunden", "3 Dienste gefunden".
pub fn count_text(count: usize) -> String {
    if count == 1 {
        "1 Dienst gefunden".to_string()
    } else {
        format!("{count} Dienste gefunden")
    }
}

// ---------------------------------------------------------------------------------------------
// HTML.

const STYLE: &str = r#"
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;font-family:"Segoe UI",system-ui,-apple-system,Roboto,"Helvetica Neue",Arial,"Liberation Sans","DejaVu Sans",sans-serif;font-size:1.0625rem;line-height:1.55;color:#1b1f24;background:#f2f4f7}
.wrap{max-width:60rem;margin:0 auto;padding:0 1rem}
a{color:#0b4f8a;text-underline-offset:.15em}
a:hover{color:#062e52;text-decoration-thickness:.125em}
:focus-visible{outline:3px solid #ffd500;outline-offset:0;box-shadow:0 0 0 6px #0b0c0c}
.skip{position:absolute;left:-100rem;top:.5rem;padding:.5rem 1rem;background:#ffd500;color:#0b0c0c;font-weight:700;z-index:10}
.skip:focus{left:.5rem}
header{background:#0d3d6e;color:#fff;border-bottom:.3125rem solid #5b9bd5}
header .wrap{padding-top:1.25rem;padding-bottom:1.5rem}
.brand{margin:0 0 .25rem;font-size:.9375rem;letter-spacing:.04em;text-transform:uppercase;color:#dce8f5}
h1{margin:0;font-size:1.75rem;line-height:1.2}
.lead{margin:.5rem 0 0;max-width:42rem;color:#f2f6fb}
main{padding:1.5rem 0 2.5rem}
.search{background:#fff;border:1px solid #c9d1dc;border-radius:.5rem;padding:1rem 1.125rem}
.search label{display:block;font-weight:700;font-size:1.125rem}
.hint{margin:.125rem 0 .5rem;color:#4a5462;font-size:.9375rem}
.row{display:flex;flex-wrap:wrap;gap:.5rem}
.row input{flex:1 1 14rem;min-width:0;font:inherit;padding:.5rem .75rem;border:2px solid #4a5462;border-radius:.25rem;background:#fff;color:#1b1f24}
.row button{flex:0 0 auto;font:inherit;font-weight:700;padding:.5rem 1.25rem;border:2px solid #0b4f8a;border-radius:.25rem;background:#0b4f8a;color:#fff;cursor:pointer}
.row button:hover{background:#083b68;border-color:#083b68}
.count{margin:1.5rem 0 .75rem;font-weight:700;font-size:1.125rem}
.count a{font-weight:400;font-size:1rem;margin-left:.5rem}
.services{list-style:none;margin:0;padding:0;display:grid;gap:1rem}
article{background:#fff;border:1px solid #c9d1dc;border-left:.375rem solid #0b4f8a;border-radius:.5rem;padding:1rem 1.125rem}
article.down{border-left-color:#a4262c}
h2{margin:0 0 .375rem;font-size:1.25rem;line-height:1.3}
.summary{margin:0 0 .75rem}
dl{margin:0;display:grid;grid-template-columns:1fr;column-gap:1rem;font-size:.9375rem}
dt{font-weight:700;color:#3b4552}
dd{margin:0 0 .5rem}
.state{display:inline-block;padding:0 .5rem;border-radius:.25rem;font-weight:700}
.state.ok{background:#e3f1e6;color:#14532d}
.state.down{background:#fbe7e8;color:#8b1a1f}
.detail{color:#4a5462}
.key{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;letter-spacing:.02em}
.empty{background:#fff;border:1px solid #c9d1dc;border-radius:.5rem;padding:1rem 1.125rem}
.empty p{margin:0 0 .5rem}
.empty p:last-child{margin:0}
footer{background:#fff;border-top:1px solid #c9d1dc;color:#3b4552;font-size:.9375rem}
footer .wrap{padding-top:1.25rem;padding-bottom:1.5rem}
footer p{margin:0 0 .375rem}
.vh{position:absolute;width:1px;height:1px;margin:-1px;padding:0;overflow:hidden;clip:rect(0 0 0 0);clip-path:inset(50%);white-space:nowrap;border:0}
@media (min-width:40em){
body{font-size:1.125rem}
.wrap{padding:0 1.5rem}
h1{font-size:2.25rem}
dl{grid-template-columns:max-content 1fr}
dd{margin:0 0 .25rem}
}
"#;

/// The document around `body`: head, skip link, header and footer.
fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"de\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <nav aria-label=\"Sprunglinks\"><a class=\"skip\" href=\"#inhalt\">Zum Inhalt springen</a></nav>\n\
         <header>\n<div class=\"wrap\">\n<p class=\"brand\">Saarland · Verwaltung online</p>\n\
         <h1>{TITLE}</h1>\n\
         <p class=\"lead\">Anträge und Anzeigen bei Land, Kreisen und Gemeinden, die Sie online \
         erledigen können – mit Zuständigkeit, Anmeldung, Barrierefreiheit und aktuellem \
         Betriebszustand.</p>\n</div>\n</header>\n\
         <main id=\"inhalt\">\n<div class=\"wrap\">\n{body}</div>\n</main>\n\
         <footer>\n<div class=\"wrap\">\n\
         <p>Ein Verzeichnis des Verbund-Rechenzentrums des Saarlandes. Der Betriebszustand \
         wird bei jedem Aufruf dieser Seite neu ermittelt.</p>\n\
         <p>Die Leistungsschlüssel folgen dem Leistungskatalog der öffentlichen Verwaltung \
         (LeiKa); die Angaben zur Barrierefreiheit der BITV 2.0.</p>\n\
         </div>\n</footer>\n</body>\n</html>\n",
        title = escape(title),
    )
}

/// A page with one heading and one paragraph (`html` is trusted markup).
fn short_page(heading: &str, html: &str) -> String {
    document(
        &format!("{heading} – {TITLE}"),
        &format!("<h2>{}</h2>\n<p>{html}</p>\n", escape(heading)),
    )
}

/// The answer before the catalogue has synced.
pub fn loading_page() -> String {
    short_page(
        "Das Verzeichnis wird gerade geladen",
        "Die Online-Dienste werden gerade zusammengestellt. Bitte laden Sie die Seite in \
         wenigen Sekunden erneut.",
    )
}

/// The directory: the search form, the number found, and every service matching `query`.
pub fn render(services: &[proto::Service], query: &str) -> String {
    let found = search(services, query);
    let searching = !query.trim().is_empty();
    let mut body = String::new();
    let q = escape(query);
    let _ = write!(
        body,
        "<form class=\"search\" role=\"search\" method=\"get\" action=\"/\">\n\
         <label for=\"q\">Online-Dienst suchen</label>\n\
         <p class=\"hint\" id=\"q-hinweis\">Zum Beispiel Wohngeld, Neunkirchen, Bürgeramt oder \
         einen Leistungsschlüssel.</p>\n\
         <div class=\"row\">\n\
         <input type=\"search\" id=\"q\" name=\"q\" value=\"{q}\" maxlength=\"{MAX_QUERY_CHARS}\" \
         autocomplete=\"off\" aria-describedby=\"q-hinweis\">\n\
         <button type=\"submit\">Suchen</button>\n</div>\n</form>\n"
    );
    let _ = write!(body, "<p class=\"count\">{}", count_text(found.len()));
    if searching {
        let _ = write!(
            body,
            " für „{q}“ <a href=\"/\">Alle {} Dienste anzeigen</a>",
            services.len()
        );
    }
    body.push_str("</p>\n");

    if found.is_empty() {
        body.push_str("<div class=\"empty\">\n");
        if searching {
            let _ = writeln!(
                body,
                "<p>Zu „{q}“ haben wir keinen Online-Dienst gefunden.</p>\n\
                 <p>Prüfen Sie die Schreibweise, suchen Sie mit einem allgemeineren Begriff \
                 (etwa „Parken“ statt „Bewohnerparkausweis“) oder nach Ihrer Gemeinde, oder \
                 <a href=\"/\">zeigen Sie alle Online-Dienste an</a>.</p>"
            );
        } else {
            body.push_str(
                "<p>Derzeit sind keine Online-Dienste eingetragen. Bitte versuchen Sie es \
                 später noch einmal.</p>\n",
            );
        }
        body.push_str("</div>\n");
    } else {
        body.push_str("<ul class=\"services\">\n");
        for (i, service) in found.iter().enumerate() {
            body.push_str("<li>");
            article(&mut body, i, service);
            body.push_str("</li>\n");
        }
        body.push_str("</ul>\n");
    }

    let title = if searching {
        format!(
            "Suche nach „{query}“: {} – {TITLE}",
            count_text(found.len())
        )
    } else {
        TITLE.to_string()
    };
    document(&title, &body)
}

/// Whether `url` may become a link: only http(s), never `javascript:` and the like.
fn linkable(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

fn article(out: &mut String, index: usize, service: &proto::Service) {
    let availability = service.availability.clone().unwrap_or_default();
    let (class, icon, state) = if availability.ready {
        ("ok", "✓", "verfügbar")
    } else {
        ("down", "⚠", "derzeit gestört")
    };
    let id = format!("dienst-{}", index + 1);
    let title = escape(&service.title);
    let _ = write!(
        out,
        "<article class=\"{class}\" aria-labelledby=\"{id}\">\n<h2 id=\"{id}\">"
    );
    if linkable(&service.url) {
        let _ = write!(
            out,
            "<a href=\"{}\">{title}<span class=\"vh\"> – zum Online-Dienst</span></a>",
            escape(&service.url)
        );
    } else {
        out.push_str(&title);
    }
    out.push_str("</h2>\n");
    if !service.summary.is_empty() {
        let _ = writeln!(out, "<p class=\"summary\">{}</p>", escape(&service.summary));
    }
    out.push_str("<dl>\n");
    let mut fact = |term: &str, html: String| {
        let _ = writeln!(out, "<dt>{term}</dt><dd>{html}</dd>");
    };
    fact(
        "Zuständige Stelle",
        or_none(escape(&service.responsible_authority)),
    );
    let regions: Vec<String> = service
        .regional_keys
        .iter()
        .map(|k| escape(&region_name(k)))
        .collect();
    fact(
        if regions.len() > 1 {
            "Gebiete"
        } else {
            "Gebiet"
        },
        or_none(regions.join(", ")),
    );
    let languages: Vec<String> = service
        .languages
        .iter()
        .map(|l| escape(language_name(l)))
        .collect();
    fact("Sprachen", or_none(languages.join(", ")));
    fact(
        "Barrierefreiheit",
        accessibility_text(service.accessibility).to_string(),
    );
    fact(
        "Anmeldung",
        trust_level_text(service.trust_level).to_string(),
    );
    let sites = if availability.sites.is_empty() {
        "in keinem Rechenzentrum bereit".to_string()
    } else {
        let sites: Vec<String> = availability.sites.iter().map(|s| escape(s)).collect();
        format!("Rechenzentren: {}", sites.join(", "))
    };
    fact(
        "Betriebszustand",
        format!(
            "<span class=\"state {class}\"><span aria-hidden=\"true\">{icon}</span> {state}</span> \
             <span class=\"detail\">{} von {} Instanzen bereit; {sites}</span>",
            availability.ready_replicas, availability.desired_replicas
        ),
    );
    fact(
        "Leistungsschlüssel (LeiKa)",
        format!(
            "<span class=\"key\">{}</span>",
            or_none(escape(&service.service_key))
        ),
    );
    out.push_str("</dl>\n</article>");
}

fn or_none(html: String) -> String {
    if html.is_empty() {
        "keine Angabe".to_string()
    } else {
        html
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(
        name: &str,
        title: &str,
        authority: &str,
        key: &str,
        region: &str,
    ) -> proto::Service {
        proto::Service {
            name: name.into(),
            title: title.into(),
            summary: format!("Zusammenfassung von {title}"),
            responsible_authority: authority.into(),
            service_key: key.into(),
            regional_keys: vec![region.into()],
            languages: vec!["de".into(), "en".into(), "xx".into()],
            accessibility: proto::Accessibility::Partial as i32,
            trust_level: proto::TrustLevel::High as i32,
            url: format!("https://service.saarland.de/{name}"),
            availability: Some(proto::Availability {
                ready: true,
                ready_replicas: 2,
                desired_replicas: 2,
                sites: vec!["rz-land".into()],
            }),
            ..Default::default()
        }
    }

    fn example() -> Vec<proto::Service> {
        vec![
            service(
                "sb/wohnsitz",
                "Wohnsitz anmelden",
                "Bürgeramt der Landeshauptstadt Saarbrücken",
                "99115005104000",
                "100410100100",
            ),
            service(
                "nk/briefwahl",
                "Wahlschein und Briefwahlunterlagen beantragen",
                "Wahlamt der Kreisstadt Neunkirchen",
                "99111007000000",
                "100430111111",
            ),
            service(
                "nk/fischerei",
                "Fischereischein beantragen",
                "Ordnungsamt",
                "99056002012000",
                "100430111111",
            ),
            service(
                "igb/hundesteuer",
                "Hund zur Hundesteuer anmelden",
                "Steueramt",
                "99029001104000",
                "100450117117",
            ),
            service(
                "uds/studium",
                "Zulassung zum Studium beantragen",
                "Universität des Saarlandes",
                "99005006012000",
                "100000000000",
            ),
        ]
    }

    fn titles(query: &str) -> Vec<String> {
        search(&example(), query)
            .into_iter()
            .map(|s| s.title.clone())
            .collect()
    }

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
        );
        assert_eq!(escape("Tom's & Jerry's"), "Tom&#39;s &amp; Jerry&#39;s");
        assert_eq!(escape("\" onfocus='x'"), "&quot; onfocus=&#39;x&#39;");
        assert_eq!(escape("Straße – ok"), "Straße – ok");
    }

    #[test]
    fn every_text_of_an_entry_is_escaped() {
        let mut evil = service(
            "x/evil",
            "<script>alert(1)</script>",
            "Amt \"<b>\"",
            "<i>",
            "100000000000",
        );
        evil.summary = "<img src=x onerror=alert(1)>".into();
        evil.languages = vec!["<svg>".into()];
        evil.url = "https://example.org/\"><script>x</script>".into();
        evil.availability = Some(proto::Availability {
            sites: vec!["<rz>".into()],
            ..Default::default()
        });
        let listed = render(std::slice::from_ref(&evil), "");
        let searched = render(&[evil], "\"><script>alert('q')</script>");
        let html = format!("{listed}{searched}");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<svg"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("<rz>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains("value=\"&quot;&gt;&lt;script&gt;alert(&#39;q&#39;)&lt;/script&gt;\"")
        );
    }

    #[test]
    fn only_web_addresses_become_links() {
        let mut s = service("a/b", "Dienst", "Amt", "99115005104000", "100000000000");
        s.url = "javascript:alert(1)".into();
        let html = render(std::slice::from_ref(&s), "");
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(html.contains("<h2 id=\"dienst-1\">Dienst</h2>"));
        s.url = "https://service.saarland.de/a".into();
        let html = render(&[s], "");
        assert!(html.contains(
            "<a href=\"https://service.saarland.de/a\">Dienst<span class=\"vh\"> – zum Online-Dienst</span></a>"
        ));
    }

    #[test]
    fn search_finds_title_key_authority_and_region_names() {
        assert_eq!(titles("wohnsitz"), ["Wohnsitz anmelden"]);
        assert_eq!(titles("FISCHEREI"), ["Fischereischein beantragen"]);
        assert_eq!(titles("99029001104000"), ["Hund zur Hundesteuer anmelden"]);
        assert_eq!(
            titles("9911"),
            [
                "Wahlschein und Briefwahlunterlagen beantragen",
                "Wohnsitz anmelden"
            ]
        );
        assert_eq!(titles("Universität"), ["Zulassung zum Studium beantragen"]);
        assert_eq!(titles("ordnungsamt"), ["Fischereischein beantragen"]);
        // By the Gemeinde and by the Kreis, which neither title nor authority names.
        assert_eq!(
            titles("Neunkirchen"),
            [
                "Fischereischein beantragen",
                "Wahlschein und Briefwahlunterlagen beantragen"
            ]
        );
        assert_eq!(titles("st. ingbert"), ["Hund zur Hundesteuer anmelden"]);
        assert_eq!(titles("Saarpfalz"), ["Hund zur Hundesteuer anmelden"]);
        assert_eq!(titles("regionalverband"), ["Wohnsitz anmelden"]);
        assert_eq!(titles("saarland"), ["Zulassung zum Studium beantragen"]);
        // Every word must match.
        assert_eq!(
            titles("beantragen neunkirchen wahl"),
            ["Wahlschein und Briefwahlunterlagen beantragen"]
        );
        assert!(titles("Wohngeld").is_empty());
        assert_eq!(titles("   ").len(), 5);
    }

    #[test]
    fn search_ignores_the_case_and_spelling_of_umlauts() {
        assert_eq!(titles("SAARBRÜCKEN"), ["Wohnsitz anmelden"]);
        assert_eq!(titles("saarbruecken"), ["Wohnsitz anmelden"]);
        assert_eq!(titles("BÜRGERAMT"), ["Wohnsitz anmelden"]);
        assert_eq!(titles("buergeramt"), ["Wohnsitz anmelden"]);
        assert_eq!(titles("UNIVERSITAET"), ["Zulassung zum Studium beantragen"]);
        assert_eq!(fold("STRASSE"), fold("Straße"));
        assert_eq!(fold("ÄÖÜ äöü ẞ"), "aeoeue aeoeue ss");
    }

    #[test]
    fn regions_have_their_names() {
        assert_eq!(
            region_name("100410100100"),
            "Landeshauptstadt Saarbrücken (Regionalverband Saarbrücken)"
        );
        assert_eq!(
            region_name("100430111111"),
            "Kreisstadt Neunkirchen (Landkreis Neunkirchen)"
        );
        assert_eq!(
            region_name("100450117117"),
            "Stadt St. Ingbert (Saarpfalz-Kreis)"
        );
        assert_eq!(region_name("100000000000"), "Saarland (landesweit)");
        assert_eq!(region_name("100460000000"), "Landkreis St. Wendel");
        // A Gemeinde not known here: its Kreis.
        assert_eq!(region_name("100420114114"), "Landkreis Merzig-Wadern");
        assert_eq!(
            region_name("091620000000"),
            "Regionalschlüssel 091620000000"
        );
    }

    #[test]
    fn counts_and_the_empty_result_are_stated() {
        assert_eq!(count_text(0), "0 Dienste gefunden");
        assert_eq!(count_text(1), "1 Dienst gefunden");
        assert_eq!(count_text(12), "12 Dienste gefunden");
        let all = render(&example(), "");
        assert!(
            all.contains("<p class=\"count\">5 Dienste gefunden</p>"),
            "{all}"
        );
        assert_eq!(all.matches("<article ").count(), 5);
        let neunkirchen = render(&example(), "Neunkirchen");
        assert!(neunkirchen.contains("<p class=\"count\">2 Dienste gefunden für „Neunkirchen“"));
        assert_eq!(neunkirchen.matches("<article ").count(), 2);
        assert!(neunkirchen.contains("value=\"Neunkirchen\""));
        let one = render(&example(), "hund");
        assert!(one.contains("1 Dienst gefunden"));
        let none = render(&example(), "Mondlandung");
        assert!(none.contains("0 Dienste gefunden"));
        assert!(none.contains("Zu „Mondlandung“ haben wir keinen Online-Dienst gefunden."));
        assert!(!none.contains("<ul class=\"services\">"));
        assert!(render(&[], "").contains("Derzeit sind keine Online-Dienste eingetragen"));
    }

    #[test]
    fn an_entry_shows_its_facts_in_words() {
        let mut down = service("a/b", "Dienst", "Amt", "99115005104000", "100410100100");
        down.availability = Some(proto::Availability {
            ready: false,
            ready_replicas: 0,
            desired_replicas: 3,
            sites: vec![],
        });
        let html = render(&[down], "");
        for text in [
            "<html lang=\"de\">",
            "<dd>Deutsch, Englisch, xx</dd>",
            "<dd>teilweise barrierefrei</dd>",
            "<dd>Online-Ausweis (eIDAS hoch)</dd>",
            "<span aria-hidden=\"true\">⚠</span> derzeit gestört",
            "0 von 3 Instanzen bereit; in keinem Rechenzentrum bereit",
            "99115005104000",
            "Landeshauptstadt Saarbrücken (Regionalverband Saarbrücken)",
        ] {
            assert!(html.contains(text), "{text} missing in {html}");
        }
        let up = render(&example()[..1], "");
        assert!(up.contains("<span aria-hidden=\"true\">✓</span> verfügbar"));
        assert!(up.contains("2 von 2 Instanzen bereit; Rechenzentren: rz-land"));
        assert!(!up.contains("aria-live"));
        assert!(!up.contains("<script"));
        assert_eq!(up.matches("<h1>").count(), 1);
    }

    #[test]
    fn the_query_is_decoded_and_capped() {
        assert_eq!(
            search_query("q=Saarbr%C3%BCcken+Wohngeld"),
            "Saarbrücken Wohngeld"
        );
        assert_eq!(search_query("x=1&q=a%26b&q=zweites"), "a&b");
        assert_eq!(search_query("q=100%"), "100%");
        assert_eq!(search_query("q=%zz%C3"), "%zz\u{fffd}");
        assert_eq!(search_query(""), "");
        assert_eq!(search_query("q"), "");
        let long = format!("q={}", "ä".repeat(1000));
        assert_eq!(search_query(&long).chars().count(), MAX_QUERY_CHARS);
    }

    /// One raw HTTP/1.1 exchange with the page on a real socket.
    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        stream
            .write_all(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn the_server_answers_with_its_headers_and_only_to_get_and_head() {
        let book = Arc::new(Book::new(0));
        for s in example() {
            book.set(&s.name.clone(), Some(s));
        }
        let synced = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = tokio::spawn(serve(listener, book, synced.clone(), shutdown.clone()));
        let get = |path: &str, method: &str| {
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        };

        let loading = exchange(addr, &get("/", "GET")).await;
        assert!(loading.starts_with("HTTP/1.1 503"), "{loading}");
        assert!(loading.contains("Das Verzeichnis wird gerade geladen"));
        let health = exchange(addr, &get("/healthz", "GET")).await;
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("ok"),
            "{health}"
        );

        synced.cancel();
        let page = exchange(addr, &get("/?q=Neunkirchen", "GET")).await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        let lower = page.to_ascii_lowercase();
        for header in [
            "content-type: text/html; charset=utf-8",
            &format!(
                "content-security-policy: {}",
                CONTENT_SECURITY_POLICY.to_ascii_lowercase()
            ),
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "cache-control: no-store",
        ] {
            assert!(lower.contains(header), "{header} missing: {page}");
        }
        assert!(page.contains("2 Dienste gefunden"));
        let head = exchange(addr, &get("/", "HEAD")).await;
        assert!(
            head.starts_with("HTTP/1.1 200") && !head.contains("<html"),
            "{head}"
        );
        let post = exchange(addr, &get("/", "POST")).await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(
            post.to_ascii_lowercase()
                .contains("x-content-type-options: nosniff"),
            "{post}"
        );
        let missing = exchange(addr, &get("/nirgends", "GET")).await;
        assert!(missing.starts_with("HTTP/1.1 404") && missing.contains("Seite nicht gefunden"));
        let long = format!("/?q={}", "a".repeat(5000));
        let long = exchange(addr, &get(&long, "GET")).await;
        assert!(long.starts_with("HTTP/1.1 200"), "{long}");
        assert!(long.contains(&format!("value=\"{}\"", "a".repeat(MAX_QUERY_CHARS))));

        shutdown.cancel();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .unwrap_or_else(|_| panic!("the server stops on shutdown"));
        assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    }
}
