/**
 * The user and password of a service's URL (a schema registry's, a mail server's), read one way for every
 * setting that carries them.
 */

/**
 * Whether a `#`, `/`, `?` or `@` left unencoded in the password ended the host early: the URL parser then
 * reads the password's end as a fragment, or a path or query holding an `@`, and the host as what came before.
 */
export const passwordCutShort = (url: URL): boolean =>
  url.hash !== '' || url.pathname.includes('@') || url.search.includes('@');

/**
 * `url` without its user and password, and them percent-decoded (hosted registries and mail providers hand
 * out `https://user:secret@host`; fetch refuses such a URL, and errors that quote it printed the password).
 * Throws a URIError for a `%` not followed by two hex digits.
 */
export function credentialsOutOf(url: URL): { href: string; username: string; password: string } {
  const username = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  const bare = new URL(url.href);
  bare.username = '';
  bare.password = '';
  return { href: bare.href, username, password };
}
