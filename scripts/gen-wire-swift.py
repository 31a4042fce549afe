#!/usr/bin/python3
"""Generates the Swift face of the Framecast wire contract.

Usage: gen-wire-swift.py DESCRIPTOR_SET SOURCES_OUT_DIR TESTS_OUT_DIR

Reads the FileDescriptorSet that `protoc --descriptor_set_out --include_imports
--include_source_info` wrote for proto/framecast/v1/*.proto and writes:

  SOURCES_OUT_DIR/<File>.swift   one public Swift struct per message and enum per enum, each
                                 converting to/from the protobuf-c structs of FramecastProto
  SOURCES_OUT_DIR/Registry.swift every message type, every event (subject ↔ type), every
                                 service method (subject ↔ request/reply types)
  TESTS_OUT_DIR/WireSamples.swift  filled samples of every message with the text that
                                 `protoc --decode` prints for them (made here with python3-protobuf)

Conventions read from the .proto files:
  * a message whose leading comment has a line `Subject: a.b` is the event published on `a.b`;
  * messages StringValue, Int64Value, … of common.proto are presence wrappers: a field of such a
    type becomes a Swift optional of the scalar;
  * `service XService` methods are requested on `svc.x.v1.<Method>`.
Output is deterministic (sorted where order is not given by the .proto files).
"""
import os
import re
import sys

from google.protobuf import descriptor_pb2 as dpb
from google.protobuf import descriptor_pool, message_factory, text_format

FD = dpb.FieldDescriptorProto
PACKAGE = "framecast.v1"
C_PREFIX_TYPE = "Framecast__V1__"
C_PREFIX_FUNC = "framecast__v1__"

WRAPPERS = {
    "StringValue": "String", "Int64Value": "Int64", "Int32Value": "Int32",
    "UInt32Value": "UInt32", "BoolValue": "Bool", "DoubleValue": "Double",
}
SWIFT_TYPE_RENAMES = {"Status": "WireStatus"}
ACRONYMS = {"id": "ID", "ids": "IDs", "url": "URL", "ai": "AI", "mqtt": "MQTT"}
SWIFT_KEYWORDS = {
    "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import",
    "init", "inout", "internal", "let", "open", "operator", "private", "protocol", "public",
    "rethrows", "static", "struct", "subscript", "typealias", "var", "break", "case", "continue",
    "default", "defer", "do", "else", "fallthrough", "for", "guard", "if", "in", "repeat",
    "return", "switch", "where", "while", "as", "catch", "false", "is", "nil", "super", "self",
    "Self", "throw", "throws", "true", "try", "Type", "Protocol", "any", "some",
}

SCALARS = {
    FD.TYPE_STRING: ("String", '""'),
    FD.TYPE_BYTES: ("[UInt8]", "[]"),
    FD.TYPE_BOOL: ("Bool", "false"),
    FD.TYPE_INT32: ("Int32", "0"),
    FD.TYPE_SINT32: ("Int32", "0"),
    FD.TYPE_SFIXED32: ("Int32", "0"),
    FD.TYPE_INT64: ("Int64", "0"),
    FD.TYPE_SINT64: ("Int64", "0"),
    FD.TYPE_SFIXED64: ("Int64", "0"),
    FD.TYPE_UINT32: ("UInt32", "0"),
    FD.TYPE_FIXED32: ("UInt32", "0"),
    FD.TYPE_UINT64: ("UInt64", "0"),
    FD.TYPE_FIXED64: ("UInt64", "0"),
    FD.TYPE_DOUBLE: ("Double", "0"),
    FD.TYPE_FLOAT: ("Float", "0"),
}


def fail(msg):
    sys.exit("gen-wire-swift: " + msg)


def camel_to_lower(name):
    """protobuf-c's CamelToLower (c_helpers.cc): AIMetadata → aimetadata, FileRecord → file_record."""
    out, was_upper = "", True
    for ch in name:
        is_upper = ch.isupper()
        if is_upper:
            if not was_upper:
                out += "_"
            out += ch.lower()
        else:
            out += ch
        was_upper = is_upper
    return out


def camel_to_upper(name):
    return camel_to_lower(name).upper()


def lower_camel(snake):
    parts = [p for p in re.split(r"[_.]", snake) if p]
    out = parts[0].lower()
    for p in parts[1:]:
        out += ACRONYMS.get(p.lower(), p[:1].upper() + p[1:].lower())
    return out


def ident(name):
    return "`%s`" % name if name in SWIFT_KEYWORDS else name


def swift_string(s):
    out = '"'
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out += '\\"'
        elif ch == "\\":
            out += "\\\\"
        elif o < 0x20 or o == 0x7F:
            out += "\\u{%x}" % o
        else:
            out += ch
    return out + '"'


def doc_lines(comment, indent):
    if not comment:
        return []
    lines = comment.strip("\n").split("\n")
    return [indent + "///" + ((" " + l.strip()) if l.strip() else "") for l in lines]


# --------------------------------------------------------------------------- model

class Enum:
    def __init__(self, proto, comment, value_comments):
        self.proto = proto
        self.name = proto.name
        self.swift = SWIFT_TYPE_RENAMES.get(proto.name, proto.name)
        self.comment = comment
        prefix = camel_to_upper(proto.name) + "_"
        self.values = []
        for i, v in enumerate(proto.value):
            n = v.name[len(prefix):] if v.name.startswith(prefix) else v.name
            self.values.append((ident(lower_camel(n.lower())), lower_camel(n.lower()), v.number, v.name,
                                value_comments.get(i)))


class Field:
    def __init__(self, proto, comment, model):
        self.proto = proto
        self.name = proto.name
        self.swift = lower_camel(proto.name)
        self.comment = comment
        self.repeated = proto.label == FD.LABEL_REPEATED
        self.kind = None  # scalar | enum | message | wrapper | map
        self.type = proto.type
        if proto.HasField("oneof_index"):
            fail("oneof is not supported by the generator (field %s)" % proto.name)
        if proto.type == FD.TYPE_MESSAGE:
            target = model.messages[proto.type_name]
            if target.map_entry:
                k, v = target.fields_proto
                if k.type != FD.TYPE_STRING or v.type != FD.TYPE_STRING:
                    fail("only map<string, string> is supported (field %s)" % proto.name)
                self.kind, self.repeated, self.target = "map", False, target
            elif target.name in WRAPPERS and not self.repeated:
                self.kind, self.target = "wrapper", target
            else:
                self.kind, self.target = "message", target
        elif proto.type == FD.TYPE_ENUM:
            self.kind, self.target = "enum", model.enums[proto.type_name]
        elif proto.type in SCALARS:
            self.kind, self.target = "scalar", None
        else:
            fail("unsupported field type %d (field %s)" % (proto.type, proto.name))

    def swift_type(self):
        if self.kind == "map":
            return "[String: String]"
        if self.kind == "wrapper":
            return WRAPPERS[self.target.name] + "?"
        if self.kind == "message":
            return "[%s]" % self.target.swift if self.repeated else self.target.swift + "?"
        base = self.target.swift if self.kind == "enum" else SCALARS[self.type][0]
        return "[%s]" % base if self.repeated else base

    def swift_default(self):
        if self.kind == "map":
            return "[:]"
        if self.kind in ("wrapper",) or (self.kind == "message" and not self.repeated):
            return "nil"
        if self.repeated:
            return "[]"
        if self.kind == "enum":
            return "." + self.target.values[0][0].strip("`")
        return SCALARS[self.type][1]


class Message:
    def __init__(self, proto, path_names, file, comment):
        self.proto = proto
        self.name = proto.name
        self.full = "%s.%s" % (PACKAGE, ".".join(path_names))
        self.swift = SWIFT_TYPE_RENAMES.get(proto.name, proto.name)
        self.c_type = C_PREFIX_TYPE + "__".join(path_names)
        self.c_func = C_PREFIX_FUNC + "__".join(camel_to_lower(n) for n in path_names)
        self.file = file
        self.comment = comment
        self.map_entry = proto.options.map_entry
        self.fields_proto = list(proto.field)
        self.fields = []
        self.field_comments = {}
        m = re.search(r"^\s*Subject:\s*([a-z0-9_.]+)\s*$", comment or "", re.M)
        self.subject = m.group(1) if m else None
        if m:
            self.comment = (comment[:m.start()] + comment[m.end():]).strip("\n")

    @property
    def generated(self):
        return not self.map_entry and not (self.file.endswith("common.proto") and self.name in WRAPPERS)


class Model:
    def __init__(self, fds):
        self.messages, self.enums, self.services = {}, {}, []
        self.files = [f for f in fds.file if f.package == PACKAGE]
        self.order = []  # (file, kind, obj) in declaration order
        for f in self.files:
            comments = {tuple(loc.path): loc.leading_comments for loc in f.source_code_info.location}
            for i, e in enumerate(f.enum_type):
                vc = {j: comments.get((5, i, 2, j)) for j in range(len(e.value))}
                en = Enum(e, comments.get((5, i)), vc)
                self.enums[".%s.%s" % (PACKAGE, e.name)] = en
                self.order.append((f.name, "enum", en))

            def walk(msg, names, path):
                if msg.enum_type:
                    fail("nested enums are not supported (%s)" % msg.name)
                m = Message(msg, names, f.name, comments.get(tuple(path)))
                m.field_comments = {j: comments.get(tuple(path + [2, j])) for j in range(len(msg.field))}
                self.messages[".%s.%s" % (PACKAGE, ".".join(names))] = m
                if not m.map_entry:
                    self.order.append((f.name, "message", m))
                for j, nested in enumerate(msg.nested_type):
                    if not nested.options.map_entry:
                        fail("nested messages other than map entries are not supported (%s)" % nested.name)
                    walk(nested, names + [nested.name], path + [3, j])

            for i, msg in enumerate(f.message_type):
                walk(msg, [msg.name], [4, i])
            for i, s in enumerate(f.service):
                self.services.append((f.name, s, comments.get((6, i)),
                                      {j: comments.get((6, i, 2, j)) for j in range(len(s.method))}))
        for m in self.messages.values():
            m.fields = [Field(fp, m.field_comments.get(j), self) for j, fp in enumerate(m.fields_proto)]
            names = [f.swift for f in m.fields]
            clash = [n for n in names if n in ("wireBytes", "subject") or names.count(n) > 1]
            if clash:
                fail("%s: Swift property names clash: %s" % (m.full, ", ".join(sorted(set(clash)))))
        swift_types = [m.swift for m in self.messages.values() if m.generated] + [e.swift for e in self.enums.values()]
        dup = sorted({n for n in swift_types if swift_types.count(n) > 1})
        if dup:
            fail("Swift type names clash: %s" % ", ".join(dup))

    def generated_messages(self):
        return [o for (_, k, o) in self.order if k == "message" and o.generated]


# --------------------------------------------------------------------------- Swift sources

HEADER = "// Generated by scripts/gen-proto (scripts/gen-wire-swift.py) from proto/framecast/v1. Do not edit.\n"


def c_scalar_to_swift(f, expr):
    t = f.type
    if t == FD.TYPE_STRING:
        return "cString(%s)" % expr
    if t == FD.TYPE_BYTES:
        return "cBytes(%s)" % expr
    if t == FD.TYPE_BOOL:
        return "(%s != 0)" % expr
    return expr


def swift_scalar_to_c(f, expr):
    t = f.type
    if t == FD.TYPE_STRING:
        return "arena.string(%s)" % expr
    if t == FD.TYPE_BYTES:
        return "arena.bytes(%s)" % expr
    if t == FD.TYPE_BOOL:
        return "(%s ? 1 : 0)" % expr
    return expr


def gen_enum(e):
    out = doc_lines(e.comment, "")
    out.append("public enum %s: Sendable, Hashable {" % e.swift)
    for case, _, num, cname, comment in e.values:
        out += doc_lines(comment, "    ")
        out.append("    case %s  // %d" % (case, num))
    out.append("    /// A value this version of the contract does not know.")
    out.append("    case unrecognized(Int32)")
    out.append("")
    out.append("    public init(wireValue: Int32) {")
    out.append("        switch wireValue {")
    for case, bare, num, _, _ in e.values:
        out.append("        case %d: self = .%s" % (num, bare))
    out.append("        default: self = .unrecognized(wireValue)")
    out.append("        }")
    out.append("    }")
    out.append("")
    out.append("    public var wireValue: Int32 {")
    out.append("        switch self {")
    for case, bare, num, _, _ in e.values:
        out.append("        case .%s: return %d" % (bare, num))
    out.append("        case .unrecognized(let value): return value")
    out.append("        }")
    out.append("    }")
    out.append("}")
    return out


def gen_message(m):
    out = doc_lines(m.comment, "")
    conforms = "WireEvent" if m.subject else "WireMessage"
    out.append("public struct %s: %s, Hashable {" % (m.swift, conforms))
    if m.subject:
        out.append("    public static let subject = Subjects.%s" % lower_camel(m.subject))
    for f in m.fields:
        out += doc_lines(f.comment, "    ")
        out.append("    public var %s: %s" % (ident(f.swift), f.swift_type()))
    out.append("")
    if m.fields:
        out.append("    public init(")
        params = ["        %s: %s = %s" % (ident(f.swift), f.swift_type(), f.swift_default()) for f in m.fields]
        out.append(",\n".join(params))
        out.append("    ) {")
        for f in m.fields:
            out.append("        self.%s = %s" % (f.swift, ident(f.swift)))
        out.append("    }")
    else:
        out.append("    public init() {}")
    out.append("")
    out.append("    public init(wireBytes: some Collection<UInt8>) throws {")
    out.append("        self = try wireDecode(Self.self, wireBytes)")
    out.append("    }")
    out.append("")
    out.append("    public func wireBytes() -> [UInt8] { wireEncode(self) }")
    out.append("}")
    out.append("")
    # C bridge
    out.append("extension %s: CMessage {" % m.swift)
    out.append("    typealias CStruct = %s" % m.c_type)
    out.append('    static let wireName = "%s"' % m.full)
    out.append("    static func cInit(_ m: UnsafeMutablePointer<CStruct>) { %s__init(m) }" % m.c_func)
    out.append("    static func cPackedSize(_ m: UnsafePointer<CStruct>) -> Int { %s__get_packed_size(m) }" % m.c_func)
    out.append("    static func cPack(_ m: UnsafePointer<CStruct>, _ out: UnsafeMutablePointer<UInt8>) -> Int { %s__pack(m, out) }" % m.c_func)
    out.append("    static func cUnpack(_ count: Int, _ data: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? { %s__unpack(nil, count, data) }" % m.c_func)
    out.append("    static func cFree(_ m: UnsafeMutablePointer<CStruct>) { %s__free_unpacked(m, nil) }" % m.c_func)
    out.append("")
    # decode
    if m.fields:
        out.append("    init(c m: UnsafePointer<CStruct>) {")
        out.append("        let c = m.pointee")
        out.append("        self.init(")
        args = []
        for f in m.fields:
            cf = "c.%s" % f.name
            n = "c.n_%s" % f.name
            if f.kind == "scalar":
                v = ("cArray(%s, %s) { %s }" % (cf, n, c_scalar_to_swift(f, "$0"))) if f.repeated else c_scalar_to_swift(f, cf)
            elif f.kind == "enum":
                conv = "%s(wireValue: Int32(truncatingIfNeeded: %%s.rawValue))" % f.target.swift
                v = ("cArray(%s, %s) { %s }" % (cf, n, conv % "$0")) if f.repeated else conv % cf
            elif f.kind == "wrapper":
                inner = c_scalar_to_swift(f.target.fields[0], "$0.pointee.value")
                v = "%s.map { %s }" % (cf, inner)
            elif f.kind == "map":
                v = "cMap(%s, %s)" % (cf, n)
            else:
                if f.repeated:
                    v = "cArray(%s, %s) { %s(c: $0!) }" % (cf, n, f.target.swift)
                else:
                    v = "%s.map { %s(c: $0) }" % (cf, f.target.swift)
            args.append("            %s: %s" % (f.swift, v))
        out.append(",\n".join(args))
        out.append("        )")
        out.append("    }")
    else:
        out.append("    init(c m: UnsafePointer<CStruct>) { self.init() }")
    out.append("")
    # encode
    if m.fields:
        out.append("    func fill(_ m: UnsafeMutablePointer<CStruct>, _ arena: WireArena) {")
        for f in m.fields:
            cf = "m.pointee.%s" % f.name
            n = "m.pointee.n_%s" % f.name
            sv = "self.%s" % f.swift
            if f.kind == "scalar":
                if f.repeated:
                    out.append("        %s = %s.count" % (n, sv))
                    out.append("        %s = arena.array(%s) { %s }" % (cf, sv, swift_scalar_to_c(f, "$0")))
                else:
                    out.append("        %s = %s" % (cf, swift_scalar_to_c(f, sv)))
            elif f.kind == "enum":
                conv = ".init(rawValue: .init(truncatingIfNeeded: %s.wireValue))"
                if f.repeated:
                    out.append("        %s = %s.count" % (n, sv))
                    out.append("        %s = arena.array(%s) { %s }" % (cf, sv, conv % "$0"))
                else:
                    out.append("        %s = %s" % (cf, conv % sv))
            elif f.kind == "wrapper":
                w = f.target
                out.append("        if let value = %s {" % sv)
                out.append("            let w = arena.allocate(%s.self, count: 1)" % w.c_type)
                out.append("            %s__init(w)" % w.c_func)
                out.append("            w.pointee.value = %s" % swift_scalar_to_c(w.fields[0], "value"))
                out.append("            %s = w" % cf)
                out.append("        }")
            elif f.kind == "map":
                e = f.target
                out.append("        let %sKeys = %s.keys.sorted()" % (f.swift, sv))
                out.append("        %s = %sKeys.count" % (n, f.swift))
                out.append("        %s = arena.array(%sKeys) { key in" % (cf, f.swift))
                out.append("            let entry = arena.allocate(%s.self, count: 1)" % e.c_type)
                out.append("            %s__init(entry)" % e.c_func)
                out.append("            entry.pointee.key = arena.string(key)")
                out.append("            entry.pointee.value = arena.string(%s[key]!)" % sv)
                out.append("            return entry")
                out.append("        }")
            else:
                if f.repeated:
                    out.append("        %s = %s.count" % (n, sv))
                    out.append("        %s = arena.array(%s) { Optional(arena.message($0)) }" % (cf, sv))
                else:
                    out.append("        if let value = %s { %s = arena.message(value) }" % (sv, cf))
        out.append("    }")
    else:
        out.append("    func fill(_ m: UnsafeMutablePointer<CStruct>, _ arena: WireArena) {}")
    out.append("}")
    return out


def gen_file(model, fname):
    out = [HEADER, "internal import CProtobufC", "internal import FramecastProto", ""]
    for (f, kind, obj) in model.order:
        if f != fname:
            continue
        if kind == "enum":
            out += gen_enum(obj)
            out.append("")
        elif obj.generated:
            out += gen_message(obj)
            out.append("")
    entries = sorted(m.c_type for m in model.messages.values() if m.map_entry and m.file == fname)
    for c_type in entries:
        out.append("extension %s: CMapEntry {}" % c_type)
    return "\n".join(out).rstrip("\n") + "\n"


def gen_registry(model):
    out = [HEADER]
    events = sorted([m for m in model.generated_messages() if m.subject], key=lambda m: m.subject)
    out.append("extension Subjects {")
    for m in events:
        out.append("    /// Event `%s`: `%s`." % (m.subject, m.swift))
        out.append('    public static let %s = "%s"' % (lower_camel(m.subject), m.subject))
    out.append("")
    out.append("    /// Every event subject of the contract.")
    out.append("    public static let allEvents: [String] = [")
    out += ["        %s," % lower_camel(m.subject) for m in events]
    out.append("    ]")
    out.append("}")
    out.append("")
    out.append("/// Every message type of the contract (presence wrappers excepted), in .proto order.")
    out.append("public enum WireMessages {")
    out.append("    public static let all: [any WireMessage.Type] = [")
    out += ["        %s.self," % m.swift for m in model.generated_messages()]
    out.append("    ]")
    out.append("")
    out.append("    /// The fully qualified protobuf name of a message type, e.g. `framecast.v1.FileRecord`.")
    out.append("    public static func protoName(of type: any WireMessage.Type) -> String {")
    out.append("        (type as? any CMessage.Type)?.wireName ?? String(describing: type)")
    out.append("    }")
    out.append("}")
    out.append("")
    out.append("/// Every event type of the contract, ordered by subject.")
    out.append("public enum WireEvents {")
    out.append("    public static let all: [any WireEvent.Type] = [")
    out += ["        %s.self," % m.swift for m in events]
    out.append("    ]")
    out.append("")
    out.append("    /// The event type published on `subject`, nil for an unknown subject.")
    out.append("    public static func type(forSubject subject: String) -> (any WireEvent.Type)? {")
    out.append("        switch subject {")
    for m in events:
        out.append("        case Subjects.%s: return %s.self" % (lower_camel(m.subject), m.swift))
    out.append("        default: return nil")
    out.append("        }")
    out.append("    }")
    out.append("}")
    for fname, s, comment, mcomments in model.services:
        if not s.name.endswith("Service"):
            fail("service names end with Service: %s" % s.name)
        svc = s.name[: -len("Service")]
        api = svc + "API"
        out.append("")
        out += doc_lines(comment, "")
        out.append("public enum %s {" % api)
        out.append('    public static let service = "%s"' % svc.lower())
        for j, meth in enumerate(s.method):
            req = model.messages[meth.input_type]
            rep = model.messages[meth.output_type]
            out += doc_lines(mcomments.get(j) or "svc.%s.v1.%s" % (svc.lower(), meth.name), "    ")
            out.append('    public static let %s = WireMethod<%s, %s>(service: service, method: "%s")'
                       % (ident(lower_camel(camel_to_lower(meth.name))), req.swift, rep.swift, meth.name))
        out.append("")
        out.append("    /// Every method's request subject.")
        out.append("    public static let allSubjects: [String] = [")
        out += ["        %s.subject," % ident(lower_camel(camel_to_lower(meth.name))) for meth in s.method]
        out.append("    ]")
        out.append("}")
    return "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- test samples

STRINGS = ["%s-%d", "ünïcødé ✓ 📷 %s %d", 'quote " back \\ slash %s %d', "日本語 %s %d"]


class SampleMaker:
    def __init__(self, model):
        self.model = model
        self.k = 0

    def scalar(self, ftype, name):
        self.k += 1
        k = self.k
        if ftype == FD.TYPE_STRING:
            return STRINGS[k % len(STRINGS)] % (name, k)
        if ftype == FD.TYPE_BYTES:
            return bytes([0, 255, k % 256, 10, 0x80])
        if ftype == FD.TYPE_BOOL:
            return True
        if ftype in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
            return -(k * 1000 + 7) if k % 2 else k * 1000 + 7
        if ftype in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
            return -(2 ** 40 + k) if k % 2 else 1_700_000_000_000 + k
        if ftype in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
            return 4_000_000_000 + k
        if ftype in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
            return 2 ** 63 + k * 12345
        if ftype == FD.TYPE_DOUBLE:
            return -(k + 0.5) if k % 2 else k + 0.5
        if ftype == FD.TYPE_FLOAT:
            return k + 0.25
        fail("no sample for type %d" % ftype)

    def zero(self, ftype):
        return {FD.TYPE_STRING: "", FD.TYPE_BYTES: b"", FD.TYPE_BOOL: False,
                FD.TYPE_DOUBLE: 0.0, FD.TYPE_FLOAT: 0.0}.get(ftype, 0)

    def full(self, m, depth=0):
        """Every field set to a non-default value; repeated fields with a default element too."""
        v = {}
        for f in m.fields:
            if f.kind == "scalar":
                v[f.name] = [self.scalar(f.type, f.name), self.zero(f.type)] if f.repeated else self.scalar(f.type, f.name)
            elif f.kind == "enum":
                last = f.target.values[-1][2]
                v[f.name] = [last, 0] if f.repeated else last
            elif f.kind == "wrapper":
                v[f.name] = self.scalar(f.target.fields[0].type, f.name)
            elif f.kind == "map":
                self.k += 1
                v[f.name] = {"album_id": "alb-ü-%d" % self.k, "k%d" % self.k: "", "": "empty key"}
            else:
                sub = self.full(f.target, depth + 1) if depth < 3 else {}
                v[f.name] = [sub, self.zeros(f.target, depth + 1)] if f.repeated else sub
        return v

    def zeros(self, m, depth=0):
        """Every field at its default, but nested messages and wrappers present (empty)."""
        v = {}
        for f in m.fields:
            if f.kind == "wrapper":
                v[f.name] = self.zero(f.target.fields[0].type)
            elif f.kind == "message" and not f.repeated:
                v[f.name] = self.zeros(f.target, depth + 1) if depth < 3 else {}
        return v

    # ---- python message (for protoc's text) and Swift literal from the same value tree
    def fill_py(self, msg, m, v):
        for f in m.fields:
            if f.name not in v:
                continue
            val = v[f.name]
            if f.kind == "wrapper":
                getattr(msg, f.name).value = val
            elif f.kind == "map":
                for key, item in val.items():
                    getattr(msg, f.name)[key] = item
            elif f.kind == "message":
                if f.repeated:
                    for sub in val:
                        self.fill_py(getattr(msg, f.name).add(), f.target, sub)
                else:
                    getattr(msg, f.name).SetInParent()
                    self.fill_py(getattr(msg, f.name), f.target, val)
            elif f.repeated:
                getattr(msg, f.name).extend(val)
            else:
                setattr(msg, f.name, val)

    def swift_value(self, f, val, kind_type=None):
        t = kind_type if kind_type is not None else f.type
        if t == FD.TYPE_STRING:
            return swift_string(val)
        if t == FD.TYPE_BYTES:
            return "[%s]" % ", ".join(str(b) for b in val)
        if t == FD.TYPE_BOOL:
            return "true" if val else "false"
        if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            return repr(float(val))
        return str(val)

    def swift_literal(self, m, v, indent):
        if not v:
            return "%s()" % m.swift
        args = []
        pad = "    " * (indent + 1)
        for f in m.fields:
            if f.name not in v:
                continue
            val = v[f.name]
            if f.kind == "scalar":
                lit = ("[%s]" % ", ".join(self.swift_value(f, x) for x in val)) if f.repeated else self.swift_value(f, val)
            elif f.kind == "enum":
                def en(num):
                    return "." + next(b for (_, b, n, _, _) in f.target.values if n == num)
                lit = ("[%s]" % ", ".join(en(x) for x in val)) if f.repeated else en(val)
            elif f.kind == "wrapper":
                lit = self.swift_value(f, val, f.target.fields[0].type)
            elif f.kind == "map":
                lit = "[%s]" % ", ".join("%s: %s" % (swift_string(a), swift_string(b)) for a, b in sorted(val.items())) if val else "[:]"
            else:
                if f.repeated:
                    lit = "[%s]" % ", ".join(self.swift_literal(f.target, x, indent + 1) for x in val)
                else:
                    lit = self.swift_literal(f.target, val, indent + 1)
            args.append("%s%s: %s" % (pad, f.swift, lit))
        return "%s(\n%s\n%s)" % (m.swift, ",\n".join(args), "    " * indent)


def gen_samples(model, fds):
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    factory = message_factory.MessageFactory(pool)
    maker = SampleMaker(model)
    out = [HEADER, "import Wire", "",
           "/// A filled message and the text `protoc --decode` prints for it (python3-protobuf's text format).",
           "struct WireSample: Sendable {",
           "    let name: String",
           "    let protoName: String",
           "    let message: any WireMessage",
           "    let text: String",
           "}",
           "",
           "enum WireSamples {",
           "    static let all: [WireSample] = [" ]
    for m in model.generated_messages():
        cls = factory.GetPrototype(pool.FindMessageTypeByName(m.full))
        for label, v in (("default", {}), ("full", maker.full(m)), ("zeros", maker.zeros(m))):
            if label == "zeros" and not v:
                continue
            msg = cls()
            maker.fill_py(msg, m, v)
            # C++ protoc prints 0.0 as "0": format floats the same way.
            text = text_format.MessageToString(msg, float_format=".9g", double_format=".17g")
            if '"#' in text:
                fail("sample text contains a raw-string delimiter")
            out.append("        WireSample(")
            out.append('            name: "%s/%s",' % (m.name, label))
            out.append('            protoName: "%s",' % m.full)
            out.append("            message: %s," % maker.swift_literal(m, v, 3))
            out.append('            text: #"""\n%s"""#' % text)
            out.append("        ),")
    out.append("    ]")
    out.append("}")
    return "\n".join(out).rstrip("\n") + "\n"


def main():
    if len(sys.argv) != 4:
        fail("usage: gen-wire-swift.py DESCRIPTOR_SET SOURCES_OUT_DIR TESTS_OUT_DIR")
    fds = dpb.FileDescriptorSet.FromString(open(sys.argv[1], "rb").read())
    model = Model(fds)
    src, tests = sys.argv[2], sys.argv[3]
    os.makedirs(src, exist_ok=True)
    os.makedirs(tests, exist_ok=True)
    for f in model.files:
        base = os.path.splitext(os.path.basename(f.name))[0]
        with open(os.path.join(src, base[:1].upper() + base[1:] + ".swift"), "w") as fh:
            fh.write(gen_file(model, f.name))
    with open(os.path.join(src, "Registry.swift"), "w") as fh:
        fh.write(gen_registry(model))
    with open(os.path.join(tests, "WireSamples.swift"), "w") as fh:
        fh.write(gen_samples(model, fds))


if __name__ == "__main__":
    main()
