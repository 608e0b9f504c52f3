//! The card-reader web bank over loopback HTTP, as a person at its pages:
//! the card number, the login challenge answered with the card's code, a
//! payment signed over the numbers the page shows, and wrong codes counted
//! until the card is locked. The codes come from the bank's own card, run
//! as a virtual card at its next counter values (what a reader would show).
use bankbridge_cap::emv::CapRequest;
use bankbridge_cap::verify::expected_code;
use bankbridge_sandbox::cardbank::PREFIX;
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use reqwest::StatusCode;

async fn sandbox() -> SandboxHandle {
    bankbridge_sandbox::spawn(SandboxConfig {
        accounts: 1,
        transactions: 10,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

struct Person {
    http: reqwest::Client,
    root: String,
    cookie: Option<String>,
}

impl Person {
    fn new(sb: &SandboxHandle) -> Person {
        Person {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            root: sb.root_url(),
            cookie: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.root)
    }

    /// A page's status, its `Location` and its text.
    async fn go(
        &mut self,
        path: &str,
        form: Option<&[(&str, &str)]>,
    ) -> (StatusCode, String, String) {
        let mut req = match form {
            Some(f) => self.http.post(self.url(path)).form(f),
            None => self.http.get(self.url(path)),
        };
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.unwrap();
        if let Some(set) = res.headers().get("set-cookie") {
            self.cookie = set.to_str().unwrap().split(';').next().map(str::to_owned);
        }
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (res.status(), location, res.text().await.unwrap())
    }
}

/// The text of the element with `id` (`<… id=ID>TEXT</…>`).
fn element(html: &str, id: &str) -> String {
    let start = html.find(&format!("id={id}>")).expect(id) + id.len() + 4;
    html[start..].split('<').next().unwrap().to_owned()
}

fn sign_numbers(html: &str) -> Vec<String> {
    let start = html.find("id=sign-numbers>").unwrap();
    let list = &html[start..html[start..].find("</ol>").unwrap() + start];
    list.split("<li>")
        .skip(1)
        .map(|i| i.split('<').next().unwrap().to_owned())
        .collect()
}

/// Log in as far as the challenge page; its path and challenge.
async fn to_challenge(p: &mut Person, pan: &str) -> (String, String) {
    let (_, _, login) = p.go(&format!("{PREFIX}/login"), None).await;
    assert!(login.contains("id=card-number"));
    let (status, at, _) = p
        .go(&format!("{PREFIX}/login"), Some(&[("card_number", pan)]))
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, page) = p.go(&at, None).await;
    let challenge = element(&page, "challenge");
    assert_eq!(challenge.len(), 8, "{page}");
    (at, challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_logs_in_and_signs_a_payment() {
    let sb = sandbox().await;
    let card = sb.state().cardbank().card().clone();
    let mut p = Person::new(&sb);
    // A card the bank does not know.
    let (_, _, page) = p
        .go(
            &format!("{PREFIX}/login"),
            Some(&[("card_number", "4000 0000 0000 0002")]),
        )
        .await;
    assert!(page.contains("not known"), "{page}");

    let spaced: String = card
        .pan
        .chars()
        .enumerate()
        .flat_map(|(i, c)| (i > 0 && i % 4 == 0).then_some(' ').into_iter().chain([c]))
        .collect();
    let (at, challenge) = to_challenge(&mut p, &spaced).await;
    let code = expected_code(
        &card,
        &CapRequest::Login {
            challenge: Some(challenge),
        },
        card.atc + 1,
    )
    .unwrap()
    .response;
    let (status, to, _) = p.go(&at, Some(&[("response", &code)])).await;
    assert_eq!(
        (status, to.as_str()),
        (StatusCode::SEE_OTHER, "/cardbank/account")
    );
    let (_, _, account) = p.go("/cardbank/account", None).await;
    assert!(account.contains("You are logged in"), "{account}");

    let (status, at, _) = p
        .go(
            "/cardbank/payment",
            Some(&[("to", "BE71 0961 2345 6769"), ("amount", "125,50")]),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, _, sign) = p.go(&at, None).await;
    let numbers = sign_numbers(&sign);
    assert_eq!(numbers, ["12550", "23456769"].map(String::from));
    let code = expected_code(&card, &CapRequest::Sign { numbers }, card.atc + 2)
        .unwrap()
        .response;
    let (_, _, done) = p.go(&at, Some(&[("response", &code)])).await;
    assert!(
        done.contains("Payment sent") && done.contains("EUR 125.50"),
        "{done}"
    );
    assert_eq!(sb.state().cardbank().stats(), (1, 1, 0, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_codes_lock_the_card_until_the_bank_unlocks_it() {
    let sb = sandbox().await;
    let card = sb.state().cardbank().card().clone();
    let mut p = Person::new(&sb);
    let (at, _) = to_challenge(&mut p, &card.pan).await;
    let (_, _, again) = p.go(&at, Some(&[("response", "11111111")])).await;
    assert!(again.contains("2 attempt(s) left"), "{again}");
    let second_challenge = element(&again, "challenge");
    p.go(&at, Some(&[("response", "22222222")])).await;
    let (_, _, locked) = p.go(&at, Some(&[("response", "33333333")])).await;
    assert!(locked.contains("id=locked"), "{locked}");
    // Locked: even the right code is refused.
    let (at, challenge) = to_challenge(&mut p, &card.pan).await;
    assert_ne!(challenge, second_challenge);
    let right = expected_code(
        &card,
        &CapRequest::Login {
            challenge: Some(challenge),
        },
        card.atc + 1,
    )
    .unwrap()
    .response;
    let (_, _, refused) = p.go(&at, Some(&[("response", &right)])).await;
    assert!(refused.contains("locked"), "{refused}");
    assert_eq!(sb.state().cardbank().stats(), (0, 0, 3, true));
    let unlocked = reqwest::Client::new()
        .post(format!("{}/_sandbox/cardbank/unlock", sb.root_url()))
        .send()
        .await
        .unwrap();
    assert!(unlocked.status().is_success());
    let (at, challenge) = to_challenge(&mut p, &card.pan).await;
    let right = expected_code(
        &card,
        &CapRequest::Login {
            challenge: Some(challenge),
        },
        card.atc + 1,
    )
    .unwrap()
    .response;
    let (status, _, _) = p.go(&at, Some(&[("response", &right)])).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "unlocked, the right code logs in"
    );
}
