/**
 * RFC 4518 string preparation of directory string values, which RFC 5280 7.1 requires before
 * names are compared (issuer to subject chaining, directoryName constraints, CRL issuers):
 * values that differ only by case, compatibility forms, invisible characters or insignificant
 * spaces are one value. Without it an excluded `O=Evil` is bypassed by `O=Ｅｖｉｌ` (fullwidth),
 * `O=Ev\u00ADil` (a soft hyphen) or `O=Evil\u200B` (a zero-width space).
 * @module
 */

/**
 * RFC 4518 2.2, mapped to nothing: every control character but the ones mapped to space, every
 * format character (Cf: soft hyphen, zero-width space and joiners, bidi controls, tags, the
 * byte order mark), COMBINING GRAPHEME JOINER, MONGOLIAN TODO SOFT HYPHEN, the variation
 * selectors and OBJECT REPLACEMENT CHARACTER. The RFC lists these code points as Unicode 3.2
 * had them; the Unicode properties also take the ones assigned since, and the other default
 * ignorable code points (Hangul fillers and the like), which render as nothing just the same.
 */
const MAPPED_TO_NOTHING =
  // deno-lint-ignore no-control-regex -- control characters are what this removes
  /[\0-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u1806\ufffc\p{Cf}\p{Variation_Selector}\p{Default_Ignorable_Code_Point}]/gu;

/** RFC 4518 2.2, mapped to SPACE: tab, line feed, line tabulation, form feed, CR, NEL, separators. */
const MAPPED_TO_SPACE = /[\t\n\v\f\r\x85\p{Zs}\p{Zl}\p{Zp}]/gu;

/**
 * RFC 4518 2.4: private use (RFC 3454 C.3), non-characters (C.4), surrogates (C.5), the
 * characters that change display properties or are deprecated (C.8), REPLACEMENT CHARACTER,
 * and unassigned code points (RFC 5280 7.1 prepares values as stored values, RFC 3454 7).
 */
const PROHIBITED = /[\p{Co}\p{Cn}\p{Cs}\u0340\u0341\u200e\u200f\u202a-\u202e\u206a-\u206f\ufffd]/u;

/** RFC 4518 2.6.1: a SPACE is insignificant unless a combining mark follows it (then it carries the mark). */
const INNER_SPACES = / +(?!\p{M})/gu;
const EDGE_SPACES = /^ +(?!\p{M})| +$/gu;

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/**
 * The RFC 4518 prepared form of a directory string value for the case-ignoring match RFC 5280
 * 7.1 prescribes: mapped (2.2), case folded (RFC 3454 B.2), NFKC-normalised (2.3), with
 * insignificant spaces removed (2.6.1: none at either end, one between words). Undefined when
 * the value holds a prohibited code point (2.4): such a value cannot be compared as a string.
 *
 * Case folding is upper case then lower case, which folds as full case folding does (ß and ẞ
 * to ss, final sigma to sigma) and also folds dotless ı with i.
 */
export function prepareString(value: string): string | undefined {
  // Printable ASCII (nearly every name) is its own NFKC form and maps to itself.
  if (PRINTABLE_ASCII.test(value)) return insignificantSpacesRemoved(value.toLowerCase());
  const folded = mappedAndFolded(value);
  return PROHIBITED.test(folded) ? undefined : insignificantSpacesRemoved(folded);
}

/** The first code point that makes {@link prepareString} refuse `value`, as `U+XXXX`, if any. */
export function prohibitedCodePoint(value: string): string | undefined {
  if (PRINTABLE_ASCII.test(value)) return undefined;
  const found = PROHIBITED.exec(mappedAndFolded(value))?.[0];
  return found === undefined
    ? undefined
    : `U+${found.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** RFC 4518 2.2 and 2.3. Normalising again after folding keeps the result stable, as B.2 intends. */
function mappedAndFolded(value: string): string {
  const mapped = value.replace(MAPPED_TO_NOTHING, "").replace(MAPPED_TO_SPACE, " ");
  return mapped.normalize("NFKC").toUpperCase().toLowerCase().normalize("NFKC");
}

function insignificantSpacesRemoved(value: string): string {
  return value.replace(INNER_SPACES, " ").replace(EDGE_SPACES, "");
}
