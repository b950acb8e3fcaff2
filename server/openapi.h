/* openapi.h: the OpenAPI 3.1 document of the REST API, generated from the route table
 * (server/http.c) and the kinds' parameter schemas (core/kinds/registry.h). */
#ifndef TD_SERVER_OPENAPI_H
#define TD_SERVER_OPENAPI_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"
#include "base/schema.h"

/* openapi_params_schema: the JSON Schema (2020-12) of a kind's params, from its td_param
 * table (n rows): dotted paths become nested objects that allow only their declared keys
 * (additionalProperties false, as td_schema_validate refuses unknown fields); each leaf gets
 * its type, inclusive range (minimum/maximum, for list elements inside items), enum, list
 * length bounds (1..max_len, 64 when max_len is 0), default and doc (description). A range
 * bound that is not finite is left out. Returns a new reference, NULL when out of memory. */
json_t *openapi_params_schema(const td_param *schema, size_t n);

/* openapi_document: the whole document (OpenAPI 3.1.0): one path item per pattern of the
 * route table and one operation per row (operationId = the route's name, its query
 * parameters from the row's list, bearer security on the rows that need the token), the
 * summaries and response shapes from the per-route descriptors in openapi.c (a row without
 * one still appears, with a generic 2XX and the error envelope), and components: the response
 * shapes, the error envelope (its codes from the HTTP_ERRORS table), each kind's params
 * (params.<kind>) and the POST /api/v1/jobs body as a oneOf over the kinds. On success *out
 * (OUT) is a new reference. Errors: TD_ENOMEM. */
int openapi_document(json_t **out /* OUT */, td_err *err);

#endif
