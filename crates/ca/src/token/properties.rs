//! Property tests of the join-token format: any text is parsed or refused
//! without panic, and a formatted token reads back.

use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn any_token_text_parses_or_is_refused(text in "(SWMTKN-1-)?[0-9a-fA-F-]{0,70}[a-z0-9-]{0,30}|.{0,100}") {
        let _ = parse_token(&text);
    }

    #[test]
    fn formatted_tokens_read_back(digest in "[0-9a-f]{64}", secret in "[a-z0-9]{1,40}") {
        let token = parse_token(&format!(" {} ", format_token(&digest, &secret))).unwrap();
        prop_assert_eq!(&token.ca_digest, &digest);
        prop_assert_eq!(&token.secret, &secret);
        prop_assert!(token_matches(&token, &digest.to_ascii_uppercase(), &secret));
    }
}
