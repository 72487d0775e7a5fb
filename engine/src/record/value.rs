//! The public value types of a span: what callers pass ([`Value`]) and
//! what recorders read ([`ValueRef`], [`Reference`], [`Truncations`]).

use std::borrow::Cow;
use std::fmt;

/// A tag or log field value, as a caller passes it.
///
/// Integers, floats and booleans keep their type. Borrowed strings
/// (`&str`) are copied into the span's arena (no global allocation);
/// `&'static str` literals can be kept without a copy through
/// [`Value::StaticStr`]; an owned `String` is moved in and freed on the
/// flusher thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// A signed integer.
    I64(i64),
    /// An unsigned integer; recorders must keep values above `i64::MAX`.
    U64(u64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A borrowed string, copied into the span's arena.
    Str(&'a str),
    /// A string literal, kept by reference.
    StaticStr(&'static str),
    /// An owned string, moved into the span.
    String(String),
}

macro_rules! value_from {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {$(
        impl From<$t> for Value<'_> {
            #[inline]
            fn from(v: $t) -> Self {
                Value::$variant(v as $as)
            }
        }
    )*};
}

value_from! {
    i64 => I64 as i64, i32 => I64 as i64, i16 => I64 as i64, i8 => I64 as i64,
    u64 => U64 as u64, u32 => U64 as u64, u16 => U64 as u64, u8 => U64 as u64,
    usize => U64 as u64, f64 => F64 as f64, f32 => F64 as f64,
}

impl From<bool> for Value<'_> {
    #[inline]
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    #[inline]
    fn from(v: &'a str) -> Self {
        Value::Str(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    #[inline]
    fn from(v: &'a String) -> Self {
        Value::Str(v)
    }
}

impl From<String> for Value<'_> {
    #[inline]
    fn from(v: String) -> Self {
        Value::String(v)
    }
}

impl From<Cow<'static, str>> for Value<'_> {
    #[inline]
    fn from(v: Cow<'static, str>) -> Self {
        match v {
            Cow::Borrowed(s) => Value::StaticStr(s),
            Cow::Owned(s) => Value::String(s),
        }
    }
}

/// A value `#[spanrec::trace]` can record as a typed tag, by reference (the
/// argument stays usable in the function): integers, floats, booleans and
/// strings, and references to them.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be recorded as a span tag",
    label = "recorded as a tag by `#[spanrec::trace]`",
    note = "tags are integers, floats, booleans and strings: add the argument to `skip(..)`, or record part of it with `fields(name = expr)`"
)]
pub trait AsTag {
    /// The value as a tag.
    fn as_tag(&self) -> Value<'_>;
}

macro_rules! as_tag_copy {
    ($($t:ty),*) => {$(
        impl AsTag for $t {
            #[inline]
            fn as_tag(&self) -> Value<'_> {
                Value::from(*self)
            }
        }
    )*};
}

as_tag_copy!(i64, i32, i16, i8, u64, u32, u16, u8, usize, f64, f32, bool);

impl AsTag for isize {
    #[inline]
    fn as_tag(&self) -> Value<'_> {
        Value::I64(*self as i64)
    }
}

impl AsTag for str {
    #[inline]
    fn as_tag(&self) -> Value<'_> {
        Value::Str(self)
    }
}

impl AsTag for String {
    #[inline]
    fn as_tag(&self) -> Value<'_> {
        Value::Str(self)
    }
}

impl AsTag for Cow<'_, str> {
    #[inline]
    fn as_tag(&self) -> Value<'_> {
        Value::Str(self)
    }
}

impl<T: AsTag + ?Sized> AsTag for &T {
    #[inline]
    fn as_tag(&self) -> Value<'_> {
        (**self).as_tag()
    }
}

impl<T: AsTag + ?Sized> AsTag for &mut T {
    #[inline]
    fn as_tag(&self) -> Value<'_> {
        (**self).as_tag()
    }
}

impl<T: AsTag + ?Sized> AsTag for Box<T> {
    #[inline]
    fn as_tag(&self) -> Value<'_> {
        (**self).as_tag()
    }
}

/// A tag or log field value as a recorder reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(&'a str),
}

impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::I64(v) => v.fmt(f),
            ValueRef::U64(v) => v.fmt(f),
            ValueRef::F64(v) => v.fmt(f),
            ValueRef::Bool(v) => v.fmt(f),
            ValueRef::Str(v) => v.fmt(f),
        }
    }
}

/// How a span relates to one it references (OpenTracing semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReferenceKind {
    /// The referenced span depends on this one's result (parent/child).
    ChildOf,
    /// The referenced span caused this one but does not wait for it.
    FollowsFrom,
}

/// A reference from a span to another span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reference {
    /// How the spans relate.
    pub kind: ReferenceKind,
    /// The referenced span's trace.
    pub trace_id: u128,
    /// The referenced span.
    pub span_id: u64,
}

/// How much of a span its [`SpanLimits`](crate::SpanLimits) cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Truncations {
    /// Tags dropped beyond `max_tags`.
    pub tags: u32,
    /// Log entries dropped beyond `max_logs`.
    pub logs: u32,
    /// Log fields dropped beyond `max_log_fields`.
    pub log_fields: u32,
    /// String values cut to `max_value_bytes`.
    pub values: u32,
    /// Baggage items refused by `max_baggage_items` or `max_baggage_bytes`.
    pub baggage: u32,
}

impl Truncations {
    pub(crate) fn any(&self) -> bool {
        *self != Truncations::default()
    }
}
