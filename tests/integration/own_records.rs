//! `skip_own_records`: two services keep one table in sync both ways over one stream,
//! each publishing its changes and applying the other's, and neither handles the
//! records it wrote itself when they come back.

use std::collections::BTreeMap;
use std::sync::Arc;

use logpipe::any::AnyBackend;
use logpipe::backend::{Backend, StartFrom};
use logpipe::{ConsumerOptions, Context, Message, Producer, Registry, handler_fn};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::ops::Setup;
use crate::scenarios::World;
use crate::support::{Running, on_backends, read_from_start, unique, wait_until};

/// A row of the table both services keep, as its change is published. The newer of two
/// versions of a row is the one with the higher `(rev, origin)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[logpipe(type = "contact", version = 1, key = "id")]
struct Contact {
    id: String,
    email: String,
    rev: u32,
    /// The service whose edit made this version.
    origin: String,
}

impl Contact {
    fn newer_than(&self, other: Option<&Contact>) -> bool {
        other.is_none_or(|other| (self.rev, &self.origin) > (other.rev, &other.origin))
    }
}

/// One service: its table, its producer (stamping its name as producer id), and what
/// its handler saw.
struct Service {
    name: &'static str,
    /// Saving a row and publishing it happen under this lock, as in one transaction.
    rows: tokio::sync::Mutex<BTreeMap<String, Contact>>,
    producer: Producer<AnyBackend>,
    /// Records this service published: its own edits and the changes it applied.
    published: std::sync::atomic::AtomicUsize,
    /// The producer of every record its handler was called with.
    handled_from: std::sync::Mutex<Vec<Option<String>>>,
}

impl Service {
    fn new(name: &'static str, backend: &AnyBackend, stream: &str) -> Arc<Self> {
        Arc::new(Self {
            name,
            rows: tokio::sync::Mutex::default(),
            producer: Producer::new(backend.clone(), stream).with_producer_id(name),
            published: Default::default(),
            handled_from: Default::default(),
        })
    }

    /// A local edit: the row's next revision, saved and published.
    async fn edit(&self, id: &str, email: String) {
        let mut rows = self.rows.lock().await;
        let rev = rows.get(id).map_or(0, |row| row.rev) + 1;
        let contact = Contact {
            id: id.to_owned(),
            email,
            rev,
            origin: self.name.to_owned(),
        };
        self.save(&mut rows, contact).await;
    }

    /// The handler: a change that is newer than the row is saved, and a save publishes
    /// what changed (as a `post_save` hook would), so the other side hears the row's
    /// state from every service that holds it.
    async fn apply(&self, contact: Contact, context: &Context) {
        self.handled_from
            .lock()
            .unwrap()
            .push(context.producer.as_deref().map(str::to_owned));
        let mut rows = self.rows.lock().await;
        if contact.newer_than(rows.get(&contact.id)) {
            self.save(&mut rows, contact).await;
        }
    }

    async fn save(&self, rows: &mut BTreeMap<String, Contact>, contact: Contact) {
        self.producer.send(&contact).await.unwrap();
        self.published
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        rows.insert(contact.id.clone(), contact);
    }

    fn published(&self) -> usize {
        self.published.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn handled(&self) -> usize {
        self.handled_from.lock().unwrap().len()
    }

    fn registry(self: &Arc<Self>) -> Registry {
        let service = Arc::clone(self);
        Registry::builder()
            .handle(handler_fn(move |contact: Contact, context: Context| {
                let service = Arc::clone(&service);
                async move {
                    service.apply(contact, &context).await;
                    Ok::<_, std::convert::Infallible>(())
                }
            }))
            .build()
            .unwrap()
    }
}

/// Edits each service makes, on `KEYS` rows both edit at once.
const EDITS: u32 = 60;
const KEYS: u32 = 6;

/// Both services edit the same rows at once while each applies the other's changes:
/// they end with the same table, every row at its newest edit; the stream then stops
/// growing (every record is handled or skipped, none more is written); neither handler
/// was called with a record of its own service, so every record on the stream is an
/// edit or a change applied from the other service, none an answer to an own echo.
fn two_services_syncing_one_table_converge_and_stop(setup: Setup) {
    let world = World::new(&setup);
    let stream = world.stream("own-records", 3);
    let crm = Service::new("crm", &world.backend, &stream);
    let billing = Service::new("billing", &world.backend, &stream);
    let consumer = |service: &Arc<Service>| {
        world
            .consumer(&unique(service.name), &stream, service.registry())
            .with_options(ConsumerOptions {
                skip_own_records: true,
                commit_every: 10,
                commit_interval_ms: 100,
                ..ConsumerOptions::default()
            })
            .with_producer_id(service.name)
    };
    let (crm_consumer, billing_consumer) = (consumer(&crm), consumer(&billing));
    world.runtime.block_on(async {
        let running = [
            Running::start(crm_consumer),
            Running::start(billing_consumer),
        ];
        let mut edits = JoinSet::new();
        for service in [&crm, &billing] {
            let service = Arc::clone(service);
            edits.spawn(async move {
                for n in 0..EDITS {
                    let id = format!("contact-{}", n % KEYS);
                    service
                        .edit(&id, format!("{}-{n}@example.com", service.name))
                        .await;
                }
            });
        }
        while let Some(done) = edits.join_next().await {
            done.unwrap();
        }
        // Settled: each handler has seen every record the other service wrote, and
        // neither wrote one more while that was read.
        wait_until(
            "both services handled every record of the other",
            std::time::Duration::from_secs(90),
            || {
                let before = (crm.published(), billing.published());
                let caught_up = crm.handled() == before.1 && billing.handled() == before.0;
                caught_up && before == (crm.published(), billing.published())
            },
        )
        .await;
        for running in running {
            running.stop().await;
        }
    });

    let (crm_rows, billing_rows) = world.runtime.block_on(async {
        (
            crm.rows.lock().await.clone(),
            billing.rows.lock().await.clone(),
        )
    });
    assert_eq!(crm_rows, billing_rows, "the two tables converge");
    assert_eq!(crm_rows.len(), KEYS as usize);
    for service in [&crm, &billing] {
        let from = service.handled_from.lock().unwrap();
        assert!(
            from.iter()
                .all(|producer| producer.as_deref() != Some(service.name)),
            "{} handled a record of its own",
            service.name
        );
    }
    // The tables hold, for every row, the newest version on the stream; every record is
    // an edit or the save of a change from the other service.
    let total = crm.published() + billing.published();
    let records = world.runtime.block_on(async {
        let reader = world
            .backend
            .open_consumer(
                &unique("own-reader"),
                std::slice::from_ref(&stream),
                StartFrom::Earliest,
            )
            .unwrap();
        read_from_start(reader, total).await
    });
    let mut newest: BTreeMap<String, Contact> = BTreeMap::new();
    let mut saves_of_others = 0;
    for record in &records {
        let envelope: serde_json::Value =
            serde_json::from_slice(record.value.strip_prefix(b"json:").unwrap()).unwrap();
        let contact: Contact = serde_json::from_value(envelope["message"].clone()).unwrap();
        if envelope["producer"] != contact.origin.as_str() {
            saves_of_others += 1;
        }
        if contact.newer_than(newest.get(&contact.id)) {
            newest.insert(contact.id.clone(), contact);
        }
    }
    assert_eq!(crm_rows, newest, "every row is at its newest edit");
    assert_eq!(
        total - saves_of_others,
        2 * EDITS as usize,
        "every other record is an edit"
    );
}

on_backends!(
    [embedded, kafka]
    two_services_syncing_one_table_converge_and_stop,
);
