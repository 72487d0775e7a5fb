//! `#[spanrec::trace]`: runs a function (sync or `async`) inside a span of
//! the process-wide tracer (`spanrec::global`). Use it through `spanrec`
//! (feature `macros`, on by default), not this crate.
//!
//! ```ignore
//! #[spanrec::trace]                                   // name: the function's path
//! fn load(machine: &str, attempts: u32) { … }        // tags machine, attempts
//!
//! #[spanrec::trace(name = "Client.FullStatus", skip(conn), fields(user = req.user.as_str()), err)]
//! async fn full_status(conn: &Conn, req: &Request) -> Result<Status, Error> { … }
//! ```
//!
//! - `name = "…"`: the operation name (default `module_path::function`);
//! - arguments are recorded as typed tags (`spanrec::AsTag`: integers,
//!   floats, booleans, strings) except those in `skip(a, b)` — or none with
//!   `skip_all` — and `self`;
//! - `fields(key = expr, …)`: more tags, computed at entry;
//! - `err`: on an `Err` return, tags `error = true` and logs `error` with
//!   the error's `Display` as `message`.
//!
//! Without a process-wide tracer the function runs untraced (counted in
//! `spanrec::global::spans_without_tracer`).

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Token, Type};

/// See the crate docs.
#[proc_macro_attribute]
pub fn trace(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = syn::parse_macro_input!(attr as Options);
    let function = syn::parse_macro_input!(item as ItemFn);
    match expand(options, function) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    skip: Vec<Ident>,
    skip_all: bool,
    fields: Vec<(Ident, Expr)>,
    err: bool,
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut o = Options::default();
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            match key.to_string().as_str() {
                "name" => {
                    input.parse::<Token![=]>()?;
                    o.name = Some(input.parse()?);
                }
                "skip" => {
                    let content;
                    syn::parenthesized!(content in input);
                    let names = Punctuated::<Ident, Token![,]>::parse_terminated(&content)?;
                    o.skip.extend(names);
                }
                "skip_all" => o.skip_all = true,
                "fields" => {
                    let content;
                    syn::parenthesized!(content in input);
                    let fields = Punctuated::<Field, Token![,]>::parse_terminated(&content)?;
                    o.fields.extend(fields.into_iter().map(|f| (f.key, f.value)));
                }
                "err" => o.err = true,
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!(
                            "unknown #[spanrec::trace] option `{other}`; expected `name = \"…\"`, `skip(..)`, `skip_all`, `fields(..)` or `err`"
                        ),
                    ))
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(o)
    }
}

struct Field {
    key: Ident,
    value: Expr,
}

impl Parse for Field {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = input.parse()?;
        input.parse::<Token![=]>()?;
        Ok(Field {
            key,
            value: input.parse()?,
        })
    }
}

/// Whether the return type names a `Result` (`Result<..>`, `io::Result<..>`).
fn returns_result(output: &ReturnType) -> bool {
    match output {
        ReturnType::Type(_, ty) => match &**ty {
            Type::Path(p) => p
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident.to_string().ends_with("Result")),
            _ => false,
        },
        ReturnType::Default => false,
    }
}

fn expand(options: Options, function: ItemFn) -> syn::Result<TokenStream2> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let fn_name = &sig.ident;
    let name = match &options.name {
        Some(n) => quote!(#n),
        None => {
            let s = fn_name.to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #s))
        }
    };
    if options.err && !returns_result(&sig.output) {
        return Err(syn::Error::new(
            sig.output
                .span()
                .join(sig.ident.span())
                .unwrap_or(sig.ident.span()),
            "`err` needs a function that returns a `Result`",
        ));
    }
    // The arguments recorded as tags.
    let mut args = Vec::new();
    for input in &sig.inputs {
        if let FnArg::Typed(t) = input {
            if let Pat::Ident(p) = &*t.pat {
                args.push((p.ident.clone(), t.ty.span()));
            }
        }
    }
    for s in &options.skip {
        if !args.iter().any(|(a, _)| a == s) {
            return Err(syn::Error::new(
                s.span(),
                format!("`{s}` is not an argument of `{fn_name}`; nothing to skip"),
            ));
        }
    }
    let tags = args
        .iter()
        .filter(|(a, _)| !options.skip_all && !options.skip.contains(a))
        .map(|(a, ty_span)| {
            let key = a.to_string();
            // The error for a type that is not a tag points at the type.
            let value = quote_spanned!(*ty_span=> ::spanrec::AsTag::as_tag(&#a));
            quote!(__spanrec_s.set_tag(#key, #value);)
        });
    let fields = options.fields.iter().map(|(k, v)| {
        let key = k.to_string();
        quote!(__spanrec_s.set_tag(#key, ::spanrec::AsTag::as_tag(&(#v)));)
    });
    let start = quote! {
        #[allow(unused_mut)]
        let mut __spanrec_span: ::core::option::Option<::spanrec::Span> =
            ::spanrec::global::start_span(#name);
        if let ::core::option::Option::Some(__spanrec_s) = __spanrec_span.as_mut() {
            #(#tags)*
            #(#fields)*
        }
    };
    let tag_err = quote! {
        |__spanrec_s: &mut ::spanrec::Span, __spanrec_r: &_| {
            if let ::core::result::Result::Err(__spanrec_e) = __spanrec_r {
                __spanrec_s.set_tag("error", true);
                __spanrec_s.log(
                    "error",
                    [("message", ::spanrec::Value::from(::std::string::ToString::to_string(__spanrec_e)))],
                );
            }
        }
    };
    let body = if sig.asyncness.is_some() {
        let on_ready = if options.err {
            quote!(::core::option::Option::Some(#tag_err))
        } else {
            quote!(::core::option::Option::None)
        };
        quote! {
            #start
            ::spanrec::InSpan::new(async move #block, __spanrec_span, #on_ready).await
        }
    } else if options.err {
        let ret = match &sig.output {
            ReturnType::Type(_, ty) => quote!(-> #ty),
            ReturnType::Default => quote!(),
        };
        quote! {
            #start
            let __spanrec_result = {
                let __spanrec_guard = __spanrec_span.as_ref().map(::spanrec::Span::enter);
                #[allow(clippy::redundant_closure_call)]
                (move || #ret #block)()
            };
            if let ::core::option::Option::Some(__spanrec_s) = __spanrec_span.as_mut() {
                (#tag_err)(__spanrec_s, &__spanrec_result);
            }
            __spanrec_result
        }
    } else {
        quote! {
            #start
            let __spanrec_guard = __spanrec_span.as_ref().map(::spanrec::Span::enter);
            #block
        }
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}
