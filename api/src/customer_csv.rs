//! Customer CSV: the import's header and rows, parsed into the same newtypes as the JSON API,
//! and the export's rows, masked per role and neutralised against formula injection.

use crate::views::customer::CustomerView;
use egec_domain::customer::{CustomerStatus, UpdateCustomer};
use egec_domain::export::csv_cell;
use egec_domain::values::*;
use egec_projections::CustomerRow;

/// The columns an import may have, in any order. Only `name` is required.
pub const IMPORT_COLUMNS: [&str; 8] = [
    "name",
    "email",
    "phone",
    "passport_number",
    "country",
    "source",
    "status",
    "notes",
];

/// Where each known column sits in the file.
#[derive(Debug, Clone, Copy)]
pub struct Header([Option<usize>; IMPORT_COLUMNS.len()]);

impl Header {
    /// Reads the header row: names are trimmed and compared case-insensitively (a leading
    /// byte-order mark, which spreadsheets write, is ignored). An unknown, repeated or
    /// missing required column is refused with a message naming it.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut at = [None; IMPORT_COLUMNS.len()];
        let mut unknown = Vec::new();
        for (i, raw) in names.into_iter().enumerate() {
            let name = raw
                .trim_start_matches('\u{feff}')
                .trim()
                .to_ascii_lowercase();
            match IMPORT_COLUMNS.iter().position(|c| *c == name) {
                Some(k) if at[k].is_some() => return Err(format!("column {name} appears twice")),
                Some(k) => at[k] = Some(i),
                // The name is a header, not a person's data, but it is cut short anyway.
                None => unknown.push(name.chars().take(40).collect::<String>()),
            }
        }
        if !unknown.is_empty() {
            return Err(format!(
                "unknown column(s) {}; the columns are {}",
                unknown.join(", "),
                IMPORT_COLUMNS.join(", ")
            ));
        }
        if at[0].is_none() {
            return Err("the header row must have a name column".into());
        }
        Ok(Header(at))
    }

    /// The trimmed cell of a column in a record; `None` when the column is absent or the
    /// cell empty (an empty cell leaves the field as it is: an import never clears).
    fn cell<'r>(&self, record: &'r csv::StringRecord, column: usize) -> Option<&'r str> {
        self.0[column]
            .and_then(|i| record.get(i))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }
}

/// One valid import row.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRow {
    pub name: PersonName,
    pub email: Option<Email>,
    pub phone: Option<PhoneE164>,
    pub passport_number: Option<PassportNumber>,
    pub country: Option<Country>,
    pub source: Option<Source>,
    pub status: Option<CustomerStatus>,
    pub notes: Option<Notes>,
}

/// Parses a record with the same newtypes as the JSON API. The error names every field at
/// fault (`email: …; phone: …`) and never echoes a value.
pub fn parse_row(
    header: &Header,
    record: &csv::StringRecord,
    region: Option<&str>,
) -> Result<ImportRow, String> {
    fn take<T>(problems: &mut Vec<String>, name: &str, r: Option<Result<T, Invalid>>) -> Option<T> {
        match r {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(Invalid(msg))) => {
                problems.push(format!("{name}: {msg}"));
                None
            }
        }
    }
    let mut problems: Vec<String> = Vec::new();
    let p = &mut problems;
    let field = |column: usize| header.cell(record, column);
    let name = take(
        p,
        "name",
        Some(
            field(0)
                .ok_or(Invalid("name is required"))
                .and_then(PersonName::parse),
        ),
    );
    let email = take(p, "email", field(1).map(Email::parse));
    let phone = take(p, "phone", field(2).map(|s| PhoneE164::parse(s, region)));
    let passport_number = take(p, "passport_number", field(3).map(PassportNumber::parse));
    let country = take(p, "country", field(4).map(Country::parse));
    let source = take(p, "source", field(5).map(Source::parse));
    let status = take(p, "status", field(6).map(str::parse::<CustomerStatus>));
    let notes = take(p, "notes", field(7).map(Notes::parse));
    let identified = [1, 2, 3].iter().any(|&c| field(c).is_some());
    if !identified {
        // Without one, a second import of the file could not recognise the row and would
        // create the customer again.
        problems
            .push("email, phone, passport_number: at least one is needed to match the row".into());
    }
    match name {
        Some(name) if problems.is_empty() => Ok(ImportRow {
            name,
            email,
            phone,
            passport_number,
            country,
            source,
            status,
            notes,
        }),
        _ => Err(problems.join("; ")),
    }
}

/// A customer's current values, as the import compares them: from the read model, or from
/// an earlier row of the same file.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub passport_number: Option<String>,
    pub country: Option<String>,
    pub source: Option<String>,
    pub status: CustomerStatus,
    pub notes: Option<String>,
}

impl Current {
    pub fn of_row(r: &CustomerRow) -> Self {
        Self {
            name: r.name.clone(),
            email: r.email.clone(),
            phone: r.phone.clone(),
            passport_number: r.passport_number.clone(),
            country: r.country.clone(),
            source: r.source.clone(),
            status: r.status,
            notes: r.notes.clone(),
        }
    }

    /// The values of a customer the row creates.
    pub fn created(row: &ImportRow) -> Self {
        let s = |v: Option<&str>| v.map(str::to_owned);
        Self {
            name: row.name.as_str().to_owned(),
            email: s(row.email.as_ref().map(Email::as_str)),
            phone: s(row.phone.as_ref().map(PhoneE164::as_str)),
            passport_number: s(row.passport_number.as_ref().map(PassportNumber::as_str)),
            country: s(row.country.as_ref().map(Country::as_str)),
            source: s(row.source.as_ref().map(Source::as_str)),
            status: row.status.unwrap_or(CustomerStatus::New),
            notes: s(row.notes.as_ref().map(Notes::as_str)),
        }
    }

    /// The update that makes this customer match the row (only the fields that differ), or
    /// `None` when the row changes nothing. Refuses an illegal status move, as the domain
    /// would, so that a dry run reports it too.
    pub fn update_for(&self, row: &ImportRow) -> Result<Option<UpdateCustomer>, String> {
        fn differs<T: AsRef<str> + Clone>(
            cur: &Option<String>,
            new: &Option<T>,
        ) -> Option<Option<T>> {
            let new = new.as_ref()?;
            (cur.as_deref() != Some(new.as_ref())).then(|| Some(new.clone()))
        }
        let status = row.status.filter(|s| *s != self.status);
        if let Some(to) = status
            && !self.status.can_move_to(to)
        {
            return Err(format!("status: cannot move from {} to {to}", self.status));
        }
        let update = UpdateCustomer {
            name: (self.name != row.name.as_str()).then(|| row.name.clone()),
            email: differs(&self.email, &row.email),
            phone: differs(&self.phone, &row.phone),
            passport_number: differs(&self.passport_number, &row.passport_number),
            country: differs(&self.country, &row.country),
            source: differs(&self.source, &row.source),
            status,
            notes: differs(&self.notes, &row.notes),
        };
        Ok((update != UpdateCustomer::default()).then_some(update))
    }

    /// The values after the row was applied.
    pub fn apply(&mut self, row: &ImportRow) {
        let next = Current::created(row);
        self.name = next.name;
        let keep = |cur: &mut Option<String>, new: Option<String>| {
            if new.is_some() {
                *cur = new;
            }
        };
        keep(&mut self.email, next.email);
        keep(&mut self.phone, next.phone);
        keep(&mut self.passport_number, next.passport_number);
        keep(&mut self.country, next.country);
        keep(&mut self.source, next.source);
        keep(&mut self.notes, next.notes);
        if let Some(s) = row.status {
            self.status = s;
        }
    }
}

/// The columns of a customer export.
pub const EXPORT_HEADER: [&str; 14] = [
    "id",
    "name",
    "email",
    "phone",
    "passport_number",
    "country",
    "source",
    "status",
    "notes",
    "assigned_agent_ids",
    "created_at",
    "updated_at",
    "version",
    "deleted",
];

/// CSV text of a page of customers (with the header first when asked): the passport number
/// masked unless `reveal`, exactly as the JSON views show it, and every cell neutralised
/// against formula injection.
pub fn export_chunk(rows: &[CustomerRow], reveal: bool, header: bool) -> csv::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 200));
    if header {
        w.write_record(EXPORT_HEADER)?;
    }
    for r in rows {
        let v = CustomerView::from_row(r, reveal);
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        let agents = v
            .assigned_agent_ids
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let cells = [
            v.id.to_string(),
            v.name,
            opt(&v.email),
            opt(&v.phone),
            opt(&v.passport_number),
            opt(&v.country),
            opt(&v.source),
            v.status,
            opt(&v.notes),
            agents,
            v.created_at.to_rfc3339(),
            v.updated_at.to_rfc3339(),
            v.version.to_string(),
            v.deleted.to_string(),
        ];
        w.write_record(cells.iter().map(|c| csv_cell(c).into_owned()))?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cells: &[&str]) -> csv::StringRecord {
        csv::StringRecord::from(cells.to_vec())
    }

    #[test]
    fn columns_may_come_in_any_order_and_any_case() {
        let h = Header::parse(["\u{feff}Email", " NAME ", "phone"]).unwrap();
        let row = parse_row(
            &h,
            &record(&["ada@example.com", "Ada Lovelace", "020 7946 0958"]),
            Some("GB"),
        )
        .unwrap();
        assert_eq!(row.name.as_str(), "Ada Lovelace");
        assert_eq!(row.email.unwrap().as_str(), "ada@example.com");
        assert_eq!(row.phone.unwrap().as_str(), "+442079460958");
    }

    #[test]
    fn an_unknown_repeated_or_missing_name_column_is_refused() {
        assert!(
            Header::parse(["name", "shoe_size"])
                .unwrap_err()
                .contains("shoe_size")
        );
        assert!(
            Header::parse(["name", "email", "Email"])
                .unwrap_err()
                .contains("twice")
        );
        assert!(Header::parse(["email"]).unwrap_err().contains("name"));
    }

    #[test]
    fn a_bad_row_names_every_field_at_fault_without_echoing_values() {
        let h = Header::parse(IMPORT_COLUMNS).unwrap();
        let err = parse_row(
            &h,
            &record(&["", "not-an-email", "12", "", "", "", "sleeping", ""]),
            Some("GB"),
        )
        .unwrap_err();
        for field in ["name:", "email:", "phone:", "status:"] {
            assert!(err.contains(field), "{err}");
        }
        assert!(!err.contains("not-an-email"));
    }

    #[test]
    fn a_row_without_email_phone_or_passport_cannot_be_matched_and_is_refused() {
        let h = Header::parse(["name", "country"]).unwrap();
        let err = parse_row(&h, &record(&["Ada Lovelace", "GB"]), None).unwrap_err();
        assert!(err.contains("at least one"));
    }

    #[test]
    fn an_identical_row_changes_nothing_and_a_different_one_only_what_differs() {
        let h = Header::parse(["name", "email", "status"]).unwrap();
        let row = parse_row(&h, &record(&["Ada Lovelace", "ada@example.com", ""]), None).unwrap();
        let mut cur = Current::created(&row);
        assert_eq!(cur.update_for(&row), Ok(None));
        let moved = parse_row(
            &h,
            &record(&["Ada King", "ada@example.com", "contacted"]),
            None,
        )
        .unwrap();
        let update = cur.update_for(&moved).unwrap().unwrap();
        assert_eq!(update.name.unwrap().as_str(), "Ada King");
        assert_eq!(update.email, None);
        assert_eq!(update.status, Some(CustomerStatus::Contacted));
        cur.apply(&moved);
        assert_eq!(cur.update_for(&moved), Ok(None));
        let back = parse_row(&h, &record(&["Ada King", "ada@example.com", "new"]), None).unwrap();
        assert!(cur.update_for(&back).unwrap_err().starts_with("status:"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any order and any letter case of the known columns reads the same row.
            #[test]
            fn any_order_and_case_of_the_columns_reads_the_same_row(
                order in Just((0..IMPORT_COLUMNS.len()).collect::<Vec<_>>()).prop_shuffle(),
                upper in proptest::collection::vec(any::<bool>(), IMPORT_COLUMNS.len()),
            ) {
                let cells = [
                    "Ada Lovelace", "ada@example.com", "+442079460958", "AB1234589",
                    "GB", "fair", "contacted", "likes maths",
                ];
                let names: Vec<String> = order
                    .iter()
                    .map(|&c| {
                        let n = IMPORT_COLUMNS[c];
                        if upper[c] { n.to_ascii_uppercase() } else { n.to_owned() }
                    })
                    .collect();
                let header = Header::parse(names.iter().map(String::as_str)).unwrap();
                let shuffled: Vec<&str> = order.iter().map(|&c| cells[c]).collect();
                let canonical = Header::parse(IMPORT_COLUMNS).unwrap();
                prop_assert_eq!(
                    parse_row(&header, &record(&shuffled), None),
                    parse_row(&canonical, &record(&cells), None)
                );
            }

            /// Whatever the cells hold, parsing answers (never panics) and a refusal never
            /// quotes a cell.
            #[test]
            fn a_refused_row_never_quotes_its_cells(
                cells in proptest::collection::vec("qx[a-z0-9@.+ =-]{10,30}", IMPORT_COLUMNS.len()),
            ) {
                let header = Header::parse(IMPORT_COLUMNS).unwrap();
                let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
                if let Err(msg) = parse_row(&header, &record(&cells), Some("GB")) {
                    for c in &cells {
                        prop_assert!(!msg.contains(c.trim()), "{msg}");
                    }
                }
            }
        }
    }
}
