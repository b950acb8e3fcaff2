/* cli.h: the client verbs of the command line (tdlab submit|ls|show|watch|cancel), which talk
 * to a running `tdlab serve` over HTTP (server/httpc.h), and their pure formatting helpers. */
#ifndef TD_SERVER_CLI_H
#define TD_SERVER_CLI_H

#include <jansson.h>
#include <stddef.h>

#include "http.h"

/* Exit codes of the client verbs. */
enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_FAILED = 1,  /* the server answered with an error, or the job did not succeed */
  CLI_EXIT_USAGE = 2,   /* bad arguments or a bad spec file (nothing was sent) */
  CLI_EXIT_DOWN = 3,    /* no answer from the server (down, wrong --url, timeout) */
};

/* cli_is_verb: non-zero for "submit", "ls", "show", "watch" and "cancel". */
int cli_is_verb(const char *verb);

/* cli_main: run client verb `verb` with its arguments argv[0..argc) (after the verb).
 * Options: --url U (else env TDLAB_URL, else http://127.0.0.1:8080, the address `tdlab serve`
 * listens on by default), --token T or --token-file F (else env TDLAB_TOKEN), sent as
 * "Authorization: Bearer T". Results go to stdout, errors to stderr as one line. Returns a
 * CLI_EXIT_* code. Requires httpc_global_init to have run. */
int cli_main(const char *verb, int argc, char **argv);

/* ---------------------------------------------------------------- pure helpers (tested) */

/* cli_error_text: one line for a failed answer with HTTP status `status` and body `body`
 * (may be NULL): "MESSAGE (field FIELD) [HTTP STATUS CODE]" from the envelope
 * {"error":{"code","message","field"}}, the field part only when field is a string; for a
 * body that is not the envelope, "HTTP STATUS" and the body's first line (at most 200 bytes).
 * Writes at most cap bytes (always NUL-terminated when cap > 0). */
void cli_error_text(long status, const char *body, char *out, size_t cap);

/* cli_progress_bar: "[#####.....]  50%  5/10" with `width` cells (1..200), the filled cells
 * floor(width * done / total); with total <= 0 (unknown) "[..........]  ?  done". done is
 * clamped to [0, total]. Writes at most cap bytes, NUL-terminated. */
void cli_progress_bar(long done, long total, int width, char *out, size_t cap);

/* cli_query_escape: append `s` to b percent-encoded for a query value (RFC 3986: every byte
 * but ALPHA / DIGIT / "-" / "." / "_" / "~" becomes %HH, upper-case hex). */
void cli_query_escape(http_buf *b, const char *s);

/* cli_json_pretty: re-indent the JSON text in[0..len) with two spaces per level, one member
 * or element per line, ": " after keys; empty objects and arrays stay "{}" and "[]". The
 * tokens (strings, numbers, literals) are copied byte for byte, so numbers keep the exact
 * text the server sent. The input is assumed to be valid JSON (the output of a bad input is
 * unspecified but stays within the input's bytes plus whitespace). */
void cli_json_pretty(const char *in, size_t len, http_buf *out);

/* cli_job_row: one `tdlab ls` row of a job object (borrowed): id, kind, name, status,
 * progress ("done/total" or "-"), created ("YYYY-MM-DD HH:MM:SS", from created_at), in the
 * column widths of the header that cli_job_header writes. Long names are cut to 24 bytes
 * (on a UTF-8 boundary) with "~" at the end. */
void cli_job_row(const json_t *job, http_buf *out);
/* cli_job_header: the header line of the `tdlab ls` table. */
void cli_job_header(http_buf *out);

#endif
