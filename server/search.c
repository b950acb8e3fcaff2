/* search.c: the jobs list's query language: a recursive-descent parser into a small tree and
 * its evaluation against one job (see search.h for the grammar and the comparison rules). */
#include "search.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/err.h"

#define MAX_TEXT 2000
#define MAX_CMPS 64
#define MAX_DEPTH 32

enum { N_AND, N_OR, N_NOT, N_CMP };
enum { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };
enum { V_NUM, V_STR, V_BOOL };

typedef struct node {
  int type;
  int a, b; /* children (indexes) for AND/OR, a for NOT */
  int op, vtype;
  char *path; /* CMP */
  char *str;
  double num;
} node;

struct search_query {
  node *nodes;
  int n, cap, root, n_cmp;
};

typedef struct parser {
  const char *s;
  size_t i;
  search_query *q;
  int depth;
  size_t err_pos;
  char *msg;
  size_t msg_size;
  int failed; /* TD_EINVAL or TD_ENOMEM once set */
} parser;

static int fail(parser *p, size_t pos, const char *fmt, const char *arg) {
  if (!p->failed) {
    p->failed = TD_EINVAL;
    p->err_pos = pos;
    snprintf(p->msg, p->msg_size, fmt, arg);
  }
  return -1;
}

static void skip_ws(parser *p) {
  while (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')
    p->i++;
}

static int is_name(char c) { return isalnum((unsigned char)c) || c == '_' || c == '-'; }
static int is_word(char c) { return is_name(c) || c == '.' || c == '+'; }

/* Is the next token the keyword kw (followed by a non-name character)? Consumes it if so. */
static int keyword(parser *p, const char *kw) {
  skip_ws(p);
  size_t n = strlen(kw);
  if (strncasecmp(p->s + p->i, kw, n) || is_word(p->s[p->i + n])) return 0;
  p->i += n;
  return 1;
}

static int new_node(parser *p, node nd) {
  search_query *q = p->q;
  if (q->n == q->cap) {
    int nc = q->cap ? 2 * q->cap : 16;
    node *nn = realloc(q->nodes, (size_t)nc * sizeof *nn);
    if (!nn) {
      free(nd.path);
      free(nd.str);
      p->failed = TD_ENOMEM;
      return -1;
    }
    q->nodes = nn;
    q->cap = nc;
  }
  q->nodes[q->n] = nd;
  return q->n++;
}

static int parse_or(parser *p);

static int parse_cmp(parser *p) {
  skip_ws(p);
  size_t start = p->i;
  while (is_name(p->s[p->i]) || (p->s[p->i] == '.' && p->i > start && is_name(p->s[p->i + 1])))
    p->i++;
  if (p->i == start)
    return fail(p, start, "expected a path (e.g. optimizer.lr or summary.test_acc)%s", "");
  size_t plen = p->i - start;
  skip_ws(p);
  size_t opos = p->i;
  int op;
  const char *o = p->s + p->i;
  if (o[0] == '!' && o[1] == '=') op = OP_NE, p->i += 2;
  else if (o[0] == '<' && o[1] == '=') op = OP_LE, p->i += 2;
  else if (o[0] == '>' && o[1] == '=') op = OP_GE, p->i += 2;
  else if (o[0] == '=' && o[1] == '=') op = OP_EQ, p->i += 2;
  else if (o[0] == '=') op = OP_EQ, p->i += 1;
  else if (o[0] == '<') op = OP_LT, p->i += 1;
  else if (o[0] == '>') op = OP_GT, p->i += 1;
  else return fail(p, opos, "expected an operator (= != < <= > >=) after the path%s", "");
  skip_ws(p);
  size_t vpos = p->i;
  node nd = {.type = N_CMP, .op = op, .a = -1, .b = -1};
  if (p->s[p->i] == '"') {
    p->i++;
    size_t cap = strlen(p->s + p->i) + 1, k = 0;
    char *str = malloc(cap);
    if (!str) {
      p->failed = TD_ENOMEM;
      return -1;
    }
    for (;;) {
      char c = p->s[p->i];
      if (!c) {
        free(str);
        return fail(p, vpos, "this string has no closing quote%s", "");
      }
      p->i++;
      if (c == '"') break;
      if (c == '\\' && (p->s[p->i] == '"' || p->s[p->i] == '\\')) c = p->s[p->i++];
      str[k++] = c;
    }
    str[k] = '\0';
    nd.vtype = V_STR;
    nd.str = str;
  } else {
    size_t v0 = p->i;
    while (is_word(p->s[p->i])) p->i++;
    if (p->i == v0) return fail(p, vpos, "expected a value (a number, a word or a \"string\")%s", "");
    size_t vl = p->i - v0;
    char *w = malloc(vl + 1);
    if (!w) {
      p->failed = TD_ENOMEM;
      return -1;
    }
    memcpy(w, p->s + v0, vl);
    w[vl] = '\0';
    char *end;
    double d = strtod(w, &end);
    if (*end == '\0' && isfinite(d) && (isdigit((unsigned char)w[0]) || w[0] == '-' || w[0] == '+' || w[0] == '.')) {
      nd.vtype = V_NUM;
      nd.num = d;
      free(w);
    } else if (!strcasecmp(w, "true") || !strcasecmp(w, "false")) {
      nd.vtype = V_BOOL;
      nd.num = !strcasecmp(w, "true");
      free(w);
    } else {
      nd.vtype = V_STR;
      nd.str = w;
    }
  }
  if (nd.vtype == V_BOOL && op != OP_EQ && op != OP_NE) {
    free(nd.str);
    return fail(p, opos, "true and false compare with = and != only%s", "");
  }
  if (++p->q->n_cmp > MAX_CMPS) {
    free(nd.str);
    return fail(p, start, "too many comparisons (at most 64)%s", "");
  }
  nd.path = malloc(plen + 1);
  if (!nd.path) {
    free(nd.str);
    p->failed = TD_ENOMEM;
    return -1;
  }
  memcpy(nd.path, p->s + start, plen);
  nd.path[plen] = '\0';
  return new_node(p, nd);
}

static int parse_unary(parser *p) {
  if (++p->depth > MAX_DEPTH) return fail(p, p->i, "nested too deeply (at most 32 levels)%s", "");
  int r;
  skip_ws(p);
  if (keyword(p, "not")) {
    int a = parse_unary(p);
    r = a < 0 ? -1 : new_node(p, (node){.type = N_NOT, .a = a, .b = -1});
  } else if (p->s[p->i] == '(') {
    size_t open = p->i++;
    r = parse_or(p);
    skip_ws(p);
    if (r >= 0 && p->s[p->i] != ')') {
      (void)open;
      r = fail(p, p->i, "expected ')' to close the '(' (or 'and' / 'or')%s", "");
    } else if (r >= 0) p->i++;
  } else {
    r = parse_cmp(p);
  }
  p->depth--;
  return r;
}

static int parse_and(parser *p) {
  int a = parse_unary(p);
  while (a >= 0 && keyword(p, "and")) {
    int b = parse_unary(p);
    a = b < 0 ? -1 : new_node(p, (node){.type = N_AND, .a = a, .b = b});
  }
  return a;
}

static int parse_or(parser *p) {
  int a = parse_and(p);
  while (a >= 0 && keyword(p, "or")) {
    int b = parse_and(p);
    a = b < 0 ? -1 : new_node(p, (node){.type = N_OR, .a = a, .b = b});
  }
  return a;
}

int search_parse(const char *text, search_query **out, size_t *pos, char *msg, size_t msg_size) {
  *out = NULL;
  *pos = 0;
  if (msg_size) msg[0] = '\0';
  if (strlen(text) > MAX_TEXT) {
    snprintf(msg, msg_size, "the query is longer than %d bytes", MAX_TEXT);
    *pos = MAX_TEXT;
    return TD_EINVAL;
  }
  search_query *q = calloc(1, sizeof *q);
  if (!q) return TD_ENOMEM;
  parser p = {.s = text, .q = q, .msg = msg, .msg_size = msg_size};
  int root = parse_or(&p);
  if (root >= 0) {
    skip_ws(&p);
    if (text[p.i]) fail(&p, p.i, "expected 'and', 'or' or the end of the query%s", "");
  }
  if (p.failed) {
    if (p.failed == TD_EINVAL) *pos = p.err_pos;
    search_free(q);
    return p.failed;
  }
  q->root = root;
  *out = q;
  return 0;
}

void search_free(search_query *q) {
  if (!q) return;
  for (int i = 0; i < q->n; i++) {
    free(q->nodes[i].path);
    free(q->nodes[i].str);
  }
  free(q->nodes);
  free(q);
}

/* ---------------------------------------------------------------- evaluation */

/* The JSON value at a dotted path inside obj (borrowed), or NULL. */
static const json_t *lookup(const json_t *obj, const char *path) {
  char part[130];
  const char *p = path;
  while (obj && *p) {
    const char *dot = strchr(p, '.');
    size_t n = dot ? (size_t)(dot - p) : strlen(p);
    if (n >= sizeof part || !json_is_object(obj)) return NULL;
    memcpy(part, p, n);
    part[n] = '\0';
    obj = json_object_get(obj, part);
    p += n + (dot ? 1 : 0);
  }
  return obj;
}

static int cmp_num(int op, double a, double b) {
  if (isnan(a) || isnan(b)) return op == OP_NE;
  switch (op) {
  case OP_EQ: return a == b;
  case OP_NE: return a != b;
  case OP_LT: return a < b;
  case OP_LE: return a <= b;
  case OP_GT: return a > b;
  default: return a >= b;
  }
}

static int cmp_str(int op, const char *a, const char *b) {
  int c = strcmp(a, b);
  switch (op) {
  case OP_EQ: return c == 0;
  case OP_NE: return c != 0;
  case OP_LT: return c < 0;
  case OP_LE: return c <= 0;
  case OP_GT: return c > 0;
  default: return c >= 0;
  }
}

/* A JSON value as a number: numbers, and the API's spellings of non-finite values. */
static int as_number(const json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return 1;
  }
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    if (!strcmp(s, "NaN")) *out = NAN;
    else if (!strcmp(s, "Infinity")) *out = INFINITY;
    else if (!strcmp(s, "-Infinity")) *out = -INFINITY;
    else return 0;
    return 1;
  }
  return 0;
}

static int eval_cmp(const node *n, const search_record *r) {
  const char *field = NULL;
  if (!strcmp(n->path, "kind")) field = r->kind;
  else if (!strcmp(n->path, "name")) field = r->name;
  else if (!strcmp(n->path, "status")) field = r->status;
  if (field || !strcmp(n->path, "kind") || !strcmp(n->path, "name") || !strcmp(n->path, "status")) {
    if (!field || n->vtype == V_BOOL) return n->op == OP_NE;
    char buf[64];
    const char *want = n->str;
    if (n->vtype == V_NUM) {
      snprintf(buf, sizeof buf, "%.17g", n->num);
      want = buf;
    }
    return cmp_str(n->op, field, want);
  }
  if (!strcmp(n->path, "tag") || !strcmp(n->path, "tags")) {
    int has = 0;
    size_t i;
    json_t *t;
    char buf[64];
    const char *want = n->str;
    if (n->vtype == V_NUM) {
      snprintf(buf, sizeof buf, "%.17g", n->num);
      want = buf;
    }
    if (r->tags && want)
      json_array_foreach((json_t *)r->tags, i, t) has |= json_is_string(t) && !strcmp(json_string_value(t), want);
    if (n->op == OP_EQ) return has;
    if (n->op == OP_NE) return !has;
    return 0;
  }
  const json_t *v;
  if (!strncmp(n->path, "summary.", 8)) v = lookup(r->summary, n->path + 8);
  else if (!strncmp(n->path, "params.", 7)) v = lookup(r->params, n->path + 7);
  else v = lookup(r->params, n->path);
  if (!v) return n->op == OP_NE;
  double d;
  if (n->vtype == V_NUM) return as_number(v, &d) ? cmp_num(n->op, d, n->num) : n->op == OP_NE;
  if (n->vtype == V_BOOL) {
    if (!json_is_boolean(v)) return n->op == OP_NE;
    return (json_is_true(v) == (n->num != 0)) == (n->op == OP_EQ);
  }
  if (!json_is_string(v)) return n->op == OP_NE;
  return cmp_str(n->op, json_string_value(v), n->str);
}

static int eval(const search_query *q, int i, const search_record *r) {
  const node *n = &q->nodes[i];
  switch (n->type) {
  case N_AND: return eval(q, n->a, r) && eval(q, n->b, r);
  case N_OR: return eval(q, n->a, r) || eval(q, n->b, r);
  case N_NOT: return !eval(q, n->a, r);
  default: return eval_cmp(n, r);
  }
}

int search_match(const search_query *q, const search_record *r) { return eval(q, q->root, r); }
