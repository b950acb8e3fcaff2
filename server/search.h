/* search.h: the jobs list's query language (GET /api/v1/jobs?q=...): parser and evaluator.
 *
 * Grammar (keywords are case-insensitive; whitespace separates tokens):
 *   expr  := or
 *   or    := and ("or" and)*
 *   and   := unary ("and" unary)*
 *   unary := "not" unary | "(" expr ")" | cmp
 *   cmp   := path op value
 *   op    := "=" | "!=" | "<" | "<=" | ">" | ">="
 *   path  := name ("." name)*          name: [A-Za-z0-9_-]+
 *   value := number | "quoted string" (\" and \\ escapes) | bare word [A-Za-z0-9_.+-]+
 * A path is looked up as follows: "kind", "name", "status" are the job's fields; "tag" is true
 * for "=" when the job has that tag ("!=" when it has not); "summary.X.Y" is in the summary;
 * "params.X" or plain "X.Y" is in the params. A number compares numerically with a number
 * (JSON numbers, and the strings "NaN", "Infinity", "-Infinity" as the API encodes them); a
 * string with a string by bytes (strcmp); true/false with a JSON boolean by "=" and "!=". A
 * path that is absent, or a value of another type, makes every comparison false except "!=",
 * which is true. NaN compares false with everything except "!=". */
#ifndef TDLAB_SEARCH_H
#define TDLAB_SEARCH_H

#include <jansson.h>
#include <stddef.h>

typedef struct search_query search_query;

/* What a query is evaluated against (all borrowed; params, summary, tags may be NULL). */
typedef struct search_record {
  const char *kind, *name, *status;
  const json_t *params;  /* object */
  const json_t *summary; /* object or NULL */
  const json_t *tags;    /* array of strings or NULL */
} search_record;

/* search_parse: compile `text` (at most 2000 bytes, at most 64 comparisons). On success 0 and
 * *out (owned by the caller, search_free). On a malformed query TD_EINVAL, *out NULL, *pos the
 * 0-based byte offset of the error and msg (msg_size bytes) what was expected there.
 * TD_ENOMEM when out of memory. */
int search_parse(const char *text, search_query **out /* OUT */, size_t *pos /* OUT */,
                 char *msg, size_t msg_size);

/* search_match: 1 when the record satisfies the query, else 0. Never fails. */
int search_match(const search_query *q, const search_record *r);

/* search_free: release a query. NULL is a no-op. */
void search_free(search_query *q);

#endif
