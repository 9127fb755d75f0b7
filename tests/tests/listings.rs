//! Tag listings and the catalog: lexical order, `n` and `last`, `Link` pagination, limits.

use berth_tests::{Method, TestRegistry, media};

const REPO: &str = "list/app";

/// Tags pushed out of order; their lexical (byte) order is `SORTED_TAGS`.
const TAGS: [&str; 9] = ["b", "a10", "a2", "A", "_z", "z.1", "1", "a-1", "a_1"];
const SORTED_TAGS: [&str; 9] = ["1", "A", "_z", "a-1", "a10", "a2", "a_1", "b", "z.1"];

async fn registry_with_tags() -> TestRegistry {
    let registry = TestRegistry::start().await;
    let image = registry.push_seeded_image(REPO, TAGS[0], "tagged").await;
    for tag in &TAGS[1..] {
        registry
            .put_manifest(REPO, tag, Some(media::OCI_MANIFEST), &image.manifest)
            .await
            .assert_status(201);
    }
    registry
}

/// Splits a `Link` target into its path and its decoded `n` and `last` parameters.
fn link_parts(link: &str) -> (String, Option<String>, Option<String>) {
    let (path, query) = link.split_once('?').expect("the Link target has a query");
    let mut n = None;
    let mut last = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value);
        match key {
            "n" => n = Some(value),
            "last" => last = Some(value),
            _ => {}
        }
    }
    (path.to_owned(), n, last)
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("a percent escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

#[tokio::test]
async fn tags_are_listed_in_lexical_order() {
    let registry = registry_with_tags().await;
    let reply = registry.get(&format!("/v2/{REPO}/tags/list")).await;
    reply.assert_status(200).assert_api_version();
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    assert_eq!(reply.json()["name"], REPO);
    assert_eq!(reply.string_list("tags"), SORTED_TAGS);
    assert!(reply.header("link").is_none(), "{reply}");
}

#[tokio::test]
async fn tags_page_with_n_and_link() {
    let registry = registry_with_tags().await;
    let reply = registry.get(&format!("/v2/{REPO}/tags/list?n=3")).await;
    reply.assert_status(200);
    assert_eq!(reply.string_list("tags"), &SORTED_TAGS[..3]);
    let link = reply.next_link().expect("a Link to the next page");
    let (path, n, last) = link_parts(&link);
    assert_eq!(path, format!("/v2/{REPO}/tags/list"));
    assert_eq!(n.as_deref(), Some("3"));
    assert_eq!(last.as_deref(), Some(SORTED_TAGS[2]));
}

#[tokio::test]
async fn following_links_yields_every_tag_once() {
    let registry = registry_with_tags().await;
    for n in 1..=TAGS.len() + 1 {
        let pages = registry
            .follow_pages(&format!("/v2/{REPO}/tags/list?n={n}"), "tags")
            .await;
        assert_eq!(pages.len(), TAGS.len().div_ceil(n), "n={n}: {pages:?}");
        assert!(pages.iter().all(|page| page.len() <= n), "n={n}: {pages:?}");
        assert_eq!(pages.concat(), SORTED_TAGS, "n={n}");
    }
}

#[tokio::test]
async fn a_page_that_ends_the_list_has_no_link() {
    let registry = registry_with_tags().await;
    let n = TAGS.len();
    let reply = registry.get(&format!("/v2/{REPO}/tags/list?n={n}")).await;
    reply.assert_status(200);
    assert_eq!(reply.string_list("tags"), SORTED_TAGS);
    assert!(reply.header("link").is_none(), "{reply}");

    let reply = registry
        .get(&format!("/v2/{REPO}/tags/list?n=2&last={}", SORTED_TAGS[6]))
        .await;
    assert_eq!(reply.string_list("tags"), &SORTED_TAGS[7..]);
    assert!(reply.header("link").is_none(), "{reply}");
}

#[tokio::test]
async fn last_starts_after_the_given_value() {
    let registry = registry_with_tags().await;
    let reply = registry
        .get(&format!("/v2/{REPO}/tags/list?last=a10"))
        .await;
    assert_eq!(reply.string_list("tags"), ["a2", "a_1", "b", "z.1"]);

    // `last` need not be a tag that exists.
    let reply = registry.get(&format!("/v2/{REPO}/tags/list?last=a3")).await;
    assert_eq!(reply.string_list("tags"), ["a_1", "b", "z.1"]);
    let reply = registry
        .get(&format!("/v2/{REPO}/tags/list?n=1&last=a3"))
        .await;
    assert_eq!(reply.string_list("tags"), ["a_1"]);
    assert!(reply.next_link().is_some());

    let reply = registry
        .get(&format!("/v2/{REPO}/tags/list?last=zzz"))
        .await;
    reply.assert_status(200);
    assert!(reply.string_list("tags").is_empty());
    assert!(reply.header("link").is_none());
}

#[tokio::test]
async fn n_zero_lists_nothing() {
    let registry = registry_with_tags().await;
    let reply = registry.get(&format!("/v2/{REPO}/tags/list?n=0")).await;
    reply.assert_status(200);
    assert!(reply.string_list("tags").is_empty(), "{reply}");
    assert!(reply.header("link").is_none(), "{reply}");
}

#[tokio::test]
async fn absurd_n_is_400() {
    let registry = registry_with_tags().await;
    for n in [
        "-1",
        "abc",
        "1.5",
        "99999999999999999999999",
        "1000000",
        "0x10",
    ] {
        registry
            .get(&format!("/v2/{REPO}/tags/list?n={n}"))
            .await
            .assert_error(400, "PAGINATION_NUMBER_INVALID");
        registry
            .get(&format!("/v2/_catalog?n={n}"))
            .await
            .assert_error(400, "PAGINATION_NUMBER_INVALID");
    }
    // The largest page Berth serves is fine.
    registry
        .get(&format!("/v2/{REPO}/tags/list?n=10000"))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn tags_of_an_unknown_repository_are_404() {
    let registry = registry_with_tags().await;
    for query in ["", "?n=0", "?n=5&last=a"] {
        registry
            .get(&format!("/v2/no/such/repo/tags/list{query}"))
            .await
            .assert_error(404, "NAME_UNKNOWN");
    }
}

#[tokio::test]
async fn a_repository_with_blobs_but_no_tags_lists_none() {
    let registry = TestRegistry::start().await;
    registry.push_blob("blobs/only", b"a blob").await;
    let reply = registry.get("/v2/blobs/only/tags/list").await;
    reply.assert_status(200);
    assert!(reply.string_list("tags").is_empty(), "{reply}");
}

#[tokio::test]
async fn deleted_tags_leave_the_listing() {
    let registry = registry_with_tags().await;
    registry
        .delete(&format!("/v2/{REPO}/manifests/a2"))
        .await
        .assert_status(202);
    let reply = registry.get(&format!("/v2/{REPO}/tags/list")).await;
    let expected: Vec<&str> = SORTED_TAGS.iter().copied().filter(|t| *t != "a2").collect();
    assert_eq!(reply.string_list("tags"), expected);
}

#[tokio::test]
async fn wrong_methods_on_listings_are_405() {
    let registry = registry_with_tags().await;
    for method in [Method::PUT, Method::POST, Method::DELETE] {
        registry
            .call(method.clone(), &format!("/v2/{REPO}/tags/list"))
            .await
            .assert_error(405, "UNSUPPORTED");
        registry
            .call(method, "/v2/_catalog")
            .await
            .assert_error(405, "UNSUPPORTED");
    }
}

// ----- catalog -----

/// Repositories created out of order, by a manifest or by a blob alone.
const REPOS: [&str; 7] = [
    "zeta",
    "alpha/two",
    "alpha",
    "alpha/one",
    "beta-1",
    "b",
    "alpha-x",
];
const SORTED_REPOS: [&str; 7] = [
    "alpha",
    "alpha-x",
    "alpha/one",
    "alpha/two",
    "b",
    "beta-1",
    "zeta",
];

async fn registry_with_repositories() -> TestRegistry {
    let registry = TestRegistry::start().await;
    for (i, repo) in REPOS.iter().enumerate() {
        if i % 2 == 0 {
            registry.push_seeded_image(repo, "v1", repo).await;
        } else {
            registry.push_blob(repo, repo.as_bytes()).await;
        }
    }
    registry
}

#[tokio::test]
async fn an_empty_catalog() {
    let registry = TestRegistry::start().await;
    let reply = registry.get("/v2/_catalog").await;
    reply.assert_status(200).assert_api_version();
    assert!(reply.string_list("repositories").is_empty());
    assert!(reply.header("link").is_none());
}

#[tokio::test]
async fn the_catalog_lists_repositories_in_lexical_order() {
    let registry = registry_with_repositories().await;
    let reply = registry.get("/v2/_catalog").await;
    reply.assert_status(200);
    assert_eq!(reply.string_list("repositories"), SORTED_REPOS);
    assert!(reply.header("link").is_none());
}

#[tokio::test]
async fn the_catalog_pages_with_n_last_and_link() {
    let registry = registry_with_repositories().await;
    let reply = registry.get("/v2/_catalog?n=3").await;
    assert_eq!(reply.string_list("repositories"), &SORTED_REPOS[..3]);
    let link = reply.next_link().expect("a Link to the next page");
    let (path, n, last) = link_parts(&link);
    assert_eq!(path, "/v2/_catalog");
    assert_eq!(n.as_deref(), Some("3"));
    assert_eq!(last.as_deref(), Some(SORTED_REPOS[2]));

    let reply = registry.get("/v2/_catalog?last=alpha%2Fone").await;
    assert_eq!(reply.string_list("repositories"), &SORTED_REPOS[3..]);
    let reply = registry.get("/v2/_catalog?last=alpha/one").await;
    assert_eq!(reply.string_list("repositories"), &SORTED_REPOS[3..]);

    for n in 1..=REPOS.len() + 1 {
        let pages = registry
            .follow_pages(&format!("/v2/_catalog?n={n}"), "repositories")
            .await;
        assert_eq!(pages.len(), REPOS.len().div_ceil(n), "n={n}: {pages:?}");
        assert_eq!(pages.concat(), SORTED_REPOS, "n={n}");
    }

    let reply = registry.get("/v2/_catalog?n=0").await;
    reply.assert_status(200);
    assert!(reply.string_list("repositories").is_empty());
    assert!(reply.header("link").is_none());
}

#[tokio::test]
async fn repositories_whose_names_share_a_prefix_keep_their_own_tags() {
    let registry = TestRegistry::start().await;
    let repos = ["app", "app-x", "app.x", "app/sub", "app_x", "ap"];
    for repo in repos {
        let image = registry
            .push_seeded_image(repo, "shared", "one image")
            .await;
        let own_tag = format!("only-{}", repo.replace('/', "-"));
        registry
            .put_manifest(repo, &own_tag, Some(media::OCI_MANIFEST), &image.manifest)
            .await
            .assert_status(201);
    }
    for repo in repos {
        let reply = registry.get(&format!("/v2/{repo}/tags/list")).await;
        let own_tag = format!("only-{}", repo.replace('/', "-"));
        assert_eq!(
            reply.string_list("tags"),
            [own_tag.as_str(), "shared"],
            "{repo}"
        );
        for n in 1..=2 {
            let pages = registry
                .follow_pages(&format!("/v2/{repo}/tags/list?n={n}"), "tags")
                .await;
            assert_eq!(pages.concat(), [own_tag.as_str(), "shared"], "{repo} n={n}");
        }
    }
    let catalog = registry.get("/v2/_catalog").await;
    assert_eq!(
        catalog.string_list("repositories"),
        ["ap", "app", "app-x", "app.x", "app/sub", "app_x"]
    );

    // Deleting the manifest by digest in one repository leaves its tags in the others alone.
    let image = berth_tests::Image::oci("one image");
    registry
        .delete(&format!("/v2/app/manifests/{}", image.digest()))
        .await
        .assert_status(202);
    let reply = registry.get("/v2/app/tags/list").await;
    reply.assert_status(200);
    assert!(reply.string_list("tags").is_empty(), "{reply}");
    for repo in &repos[1..] {
        assert_eq!(
            registry
                .get(&format!("/v2/{repo}/tags/list"))
                .await
                .string_list("tags")
                .len(),
            2,
            "{repo}"
        );
    }
}
