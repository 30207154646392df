//! `#[derive(Message)]` for logpipe: declares a type's wire identity.
//!
//! Use it through the `logpipe` crate, which re-exports it:
//!
//! ```ignore
//! #[derive(Serialize, Deserialize, logpipe::Message)]
//! #[logpipe(type = "person", version = 2, key = "uuid")]
//! struct PersonV2 { uuid: String, first_name: String }
//! ```

use proc_macro::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Fields, Ident, LitInt, LitStr, parse_macro_input};

/// Implements `logpipe::Message` from a `#[logpipe(type = "..", version = N, key = "..")]`
/// attribute. `type` and `version` are required; `key` names a field whose type implements
/// `logpipe::KeyValue`.
#[proc_macro_derive(Message, attributes(logpipe))]
pub fn derive_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

struct Identity {
    message_type: LitStr,
    version: LitInt,
    key: Option<LitStr>,
}

fn parse_identity(input: &DeriveInput) -> syn::Result<Identity> {
    let mut message_type = None;
    let mut version = None;
    let mut key = None;
    for attr in input
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("logpipe"))
    {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("type") {
                message_type = Some(meta.value()?.parse::<LitStr>()?);
            } else if meta.path.is_ident("version") {
                let lit = meta.value()?.parse::<LitInt>()?;
                lit.base10_parse::<u64>()?;
                version = Some(lit);
            } else if meta.path.is_ident("key") {
                key = Some(meta.value()?.parse::<LitStr>()?);
            } else {
                return Err(
                    meta.error("unknown logpipe attribute; expected `type`, `version` or `key`")
                );
            }
            Ok(())
        })?;
    }
    let missing = |what| {
        syn::Error::new_spanned(
            &input.ident,
            format!("#[derive(Message)] needs #[logpipe({what} = ..)]"),
        )
    };
    let message_type = message_type.ok_or_else(|| missing("type"))?;
    if message_type.value().is_empty() {
        return Err(syn::Error::new_spanned(
            &message_type,
            "the message type must not be empty",
        ));
    }
    Ok(Identity {
        message_type,
        version: version.ok_or_else(|| missing("version"))?,
        key,
    })
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let Identity {
        message_type,
        version,
        key,
    } = parse_identity(input)?;
    let name = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let key_items = match key {
        None => quote! {},
        Some(key) => {
            let field = key_field(input, &key)?;
            quote! {
                const KEY_FIELD: ::core::option::Option<&'static str> = ::core::option::Option::Some(#key);
                fn key(&self) -> ::core::option::Option<::std::string::String> {
                    ::logpipe::KeyValue::to_key(&self.#field)
                }
            }
        }
    };
    Ok(quote! {
        impl #impl_generics ::logpipe::Message for #name #type_generics #where_clause {
            const TYPE: &'static str = #message_type;
            const VERSION: u64 = #version;
            #key_items
        }
    })
}

/// Finds the named field of a struct, so that a misspelt key is a compile error here.
fn key_field(input: &DeriveInput, key: &LitStr) -> syn::Result<Ident> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new_spanned(
            key,
            "`key` is only supported on structs with named fields",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(
            key,
            "`key` is only supported on structs with named fields",
        ));
    };
    fields
        .named
        .iter()
        .filter_map(|field| field.ident.clone())
        .find(|ident| ident.unraw() == key.value())
        .ok_or_else(|| syn::Error::new_spanned(key, format!("no field named `{}`", key.value())))
}
