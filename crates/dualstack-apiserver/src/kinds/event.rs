//! Events (core/v1): what controllers tell users; selectable by `involvedObject.*`, `reason`,
//! `type`, `source`, `reportingComponent` as `kubectl describe` needs.

use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::core::v1::Event;

use crate::resource::{Column, Ctx, ResourceDef, Strategy, human_duration};

static DEF: ResourceDef = ResourceDef {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    subresources: &[],
    name_rule: NameRule::Subdomain,
    field_labels: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ],
    return_deleted_object: false,
    allow_create_on_update: true,
    columns: &[
        Column::new("Last Seen", "Time when last this event was seen"),
        Column::new("Type", "Type of this event (Normal, Warning)"),
        Column::new(
            "Reason",
            "Short, machine understandable string that gives the reason for the transition",
        ),
        Column::new("Object", "The object this event is about"),
        Column::wide("Subobject", "The subobject this event is about"),
        Column::wide("Source", "The component reporting this event"),
        Column::new(
            "Message",
            "A human-readable description of the status of this operation",
        ),
        Column::wide("First Seen", "Time when first this event was seen"),
        Column {
            name: "Count",
            ty: "integer",
            format: "",
            description: "The number of times this event has occurred",
            priority: 1,
        },
        Column {
            name: "Name",
            ty: "string",
            format: "name",
            description: "Name of the event",
            priority: 1,
        },
    ],
};

/// The Event strategy.
#[derive(Debug, Default)]
pub struct EventStrategy;

fn source_string(e: &Event) -> String {
    let src = e.source.as_ref();
    let comp = src
        .and_then(|s| s.component.clone())
        .or_else(|| e.reporting_component.clone())
        .unwrap_or_default();
    match src.and_then(|s| s.host.clone()) {
        Some(h) if !h.is_empty() => format!("{comp}, {h}"),
        _ => comp,
    }
}

impl Strategy for EventStrategy {
    type Obj = Event;

    fn def(&self) -> &ResourceDef {
        &DEF
    }

    fn validate(&self, _ctx: &Ctx, e: &Event) -> ErrorList {
        let mut errs = Vec::new();
        let ns = e.metadata.namespace.as_deref().unwrap_or("");
        let io_ns = e.involved_object.namespace.as_deref().unwrap_or("");
        if !io_ns.is_empty() && io_ns != ns {
            errs.push(FieldError::invalid(
                &Path::new("involvedObject").child("namespace"),
                io_ns,
                "does not match event.namespace",
            ));
        }
        errs
    }

    fn fields(&self, e: &Event, out: &mut Vec<(&'static str, String)>) {
        let io = &e.involved_object;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        out.push(("involvedObject.kind", s(&io.kind)));
        out.push(("involvedObject.namespace", s(&io.namespace)));
        out.push(("involvedObject.name", s(&io.name)));
        out.push(("involvedObject.uid", s(&io.uid)));
        out.push(("involvedObject.apiVersion", s(&io.api_version)));
        out.push(("involvedObject.resourceVersion", s(&io.resource_version)));
        out.push(("involvedObject.fieldPath", s(&io.field_path)));
        out.push(("reason", s(&e.reason)));
        out.push(("reportingComponent", s(&e.reporting_component)));
        out.push((
            "source",
            e.source
                .as_ref()
                .and_then(|x| x.component.clone())
                .unwrap_or_default(),
        ));
        out.push(("type", s(&e.type_)));
    }

    fn row(&self, e: &Event, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        let since = |t: Option<jiff::Timestamp>| match t {
            Some(t) => human_duration(now.duration_since(t).as_secs()),
            None => "<unknown>".into(),
        };
        let last = e
            .last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let first = e.first_timestamp.as_ref().map(|t| t.0).or(last);
        let io = &e.involved_object;
        let object = format!(
            "{}/{}",
            io.kind.clone().unwrap_or_default().to_lowercase(),
            io.name.clone().unwrap_or_default()
        );
        vec![
            since(last).into(),
            e.type_.clone().unwrap_or_default().into(),
            e.reason.clone().unwrap_or_default().into(),
            object.into(),
            io.field_path.clone().unwrap_or_default().into(),
            source_string(e).into(),
            e.message
                .clone()
                .unwrap_or_default()
                .trim()
                .to_string()
                .into(),
            since(first).into(),
            e.count.unwrap_or(1).into(),
            e.metadata.name.clone().unwrap_or_default().into(),
        ]
    }
}
