//! The descriptor index behind reflection: every file, symbol and extension of a descriptor set,
//! so that each reflection question is a map lookup.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::LazyLock;

use prost::Message;
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use tracing::{debug, error};

use crate::pb;

/// The crate's own descriptor set, indexed on first use.
pub(super) static SHIPPED_INDEX: LazyLock<Index> = LazyLock::new(|| {
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap_or_else(|e| {
        // Bytes written by build.rs; a test guards that they decode.
        error!(error = %e, "embedded descriptor set does not decode; reflection knows nothing");
        FileDescriptorSet::default()
    });
    Index::new(&set)
});

/// A descriptor set arranged so that every reflection question is a map lookup. Files are
/// referred to by their position in `files`.
#[derive(Default)]
pub(super) struct Index {
    pub(super) files: Vec<IndexedFile>,
    pub(super) by_filename: HashMap<String, usize>,
    pub(super) by_symbol: HashMap<String, usize>,
    /// Every message type, with its extensions: field number → the file declaring it.
    pub(super) extensions: HashMap<String, BTreeMap<i32, usize>>,
}

pub(super) struct IndexedFile {
    /// The `FileDescriptorProto`, encoded once.
    pub(super) encoded: Vec<u8>,
    /// The files it imports, as positions (imports missing from the set are left out).
    imports: Vec<usize>,
}

impl Index {
    pub(super) fn new(set: &FileDescriptorSet) -> Index {
        let mut index = Index::default();
        for file in &set.file {
            // The first of two files with one name wins, as it would in a descriptor pool.
            if index.by_filename.contains_key(file.name()) {
                debug!(file = file.name(), "descriptor set names a file twice");
                continue;
            }
            let f = index.files.len();
            index.by_filename.insert(file.name().to_owned(), f);
            index.files.push(IndexedFile {
                encoded: file.encode_to_vec(),
                imports: Vec::new(),
            });
            let package = file.package();
            for message in &file.message_type {
                index.add_message(f, package, message);
            }
            for enumeration in &file.enum_type {
                index.add_enum(f, package, enumeration);
            }
            for extension in &file.extension {
                index.add_extension(f, package, extension);
            }
            for service in &file.service {
                let name = full_name(package, service.name());
                for method in &service.method {
                    index.add_symbol(f, full_name(&name, method.name()));
                }
                index.add_symbol(f, name);
            }
        }
        // Imports once every file has its position (the set is usually in dependency order, but
        // nothing requires it).
        for file in &set.file {
            let Some(&f) = index.by_filename.get(file.name()) else {
                continue;
            };
            let imports: Vec<usize> = file
                .dependency
                .iter()
                .filter_map(|dep| index.by_filename.get(dep).copied())
                .collect();
            if let Some(indexed) = index.files.get_mut(f) {
                indexed.imports = imports;
            }
        }
        index
    }

    fn add_symbol(&mut self, file: usize, symbol: String) {
        self.by_symbol.entry(symbol).or_insert(file);
    }

    fn add_message(&mut self, file: usize, scope: &str, message: &DescriptorProto) {
        let name = full_name(scope, message.name());
        self.extensions.entry(name.clone()).or_default();
        for field in &message.field {
            self.add_symbol(file, full_name(&name, field.name()));
        }
        for oneof in &message.oneof_decl {
            self.add_symbol(file, full_name(&name, oneof.name()));
        }
        for nested in &message.nested_type {
            self.add_message(file, &name, nested);
        }
        for enumeration in &message.enum_type {
            self.add_enum(file, &name, enumeration);
        }
        for extension in &message.extension {
            self.add_extension(file, &name, extension);
        }
        self.add_symbol(file, name);
    }

    /// An enum's values are its siblings, not its children (protobuf's C++ scoping).
    fn add_enum(&mut self, file: usize, scope: &str, enumeration: &EnumDescriptorProto) {
        self.add_symbol(file, full_name(scope, enumeration.name()));
        for value in &enumeration.value {
            self.add_symbol(file, full_name(scope, value.name()));
        }
    }

    fn add_extension(&mut self, file: usize, scope: &str, extension: &FieldDescriptorProto) {
        self.add_symbol(file, full_name(scope, extension.name()));
        // Compiled descriptors name the extendee fully qualified, with a leading dot.
        let extendee = extension.extendee();
        let extendee = extendee.strip_prefix('.').unwrap_or(extendee);
        self.extensions
            .entry(extendee.to_owned())
            .or_default()
            .entry(extension.number())
            .or_insert(file);
    }

    /// The encoded `file`, then those of its transitive imports not in `sent`; marks them sent.
    pub(super) fn with_imports(&self, file: usize, sent: &mut SentFiles) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        sent.insert(file);
        let mut queue = VecDeque::from([file]);
        while let Some(f) = queue.pop_front() {
            let Some(indexed) = self.files.get(f) else {
                continue;
            };
            out.push(indexed.encoded.clone());
            // A file already sent went out with all its imports, so it is not walked again.
            queue.extend(indexed.imports.iter().filter(|&&dep| sent.insert(dep)));
        }
        out
    }
}

/// `scope.name`, or `name` at the top level of a file without a package.
fn full_name(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// The files already sent on one reflection stream.
pub(super) struct SentFiles(Vec<bool>);

impl SentFiles {
    pub(super) fn new(index: &Index) -> SentFiles {
        SentFiles(vec![false; index.files.len()])
    }

    /// Marks `file` sent; whether it was not yet.
    pub(super) fn insert(&mut self, file: usize) -> bool {
        match self.0.get_mut(file) {
            Some(sent) => !std::mem::replace(sent, true),
            None => false,
        }
    }
}
