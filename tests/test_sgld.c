/* test_sgld.c: the sgld optimizer (optim.h) and SGLD through the trainer.
 *  - one step from p = 0 with gradient g over 200000 coordinates: the displacement has mean
 *    -lr g and variance 2 lr T / N, checked within 5 Monte Carlo standard errors (se of a
 *    sample variance ~ v sqrt(2 / n), of a mean sqrt(v / n));
 *  - T = 0 is exactly SGD with coupled weight decay (to the last bit);
 *  - the noise of step t is a function of (seed, t): equal for equal steps, different
 *    otherwise, so a fork draws its parent's noise;
 *  - a missing n_data is refused naming the field.
 * (The stationary variance of the chain is tested on a Gaussian target in test_implicit.c,
 * kind langevin.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"

static td_optim *make(double T, double N, double wd, uint64_t seed, size_t n) {
  td_optim_hp hp = td_optim_hp_default();
  hp.temperature = T;
  hp.n_data = N;
  hp.weight_decay = wd;
  hp.noise_seed = seed;
  td_optim *o = NULL;
  td_err err;
  assert_int_equal(td_optim_create("sgld", &hp, n, &o, &err), 0);
  return o;
}

static void test_one_step_moments(void **state) {
  (void)state;
  const size_t n = 200000;
  const double lr = 0.05, T = 2.0, N = 50;
  td_optim *o = make(T, N, 0.0, 7, n);
  double *p = calloc(n, sizeof *p), *g = malloc(n * sizeof *g);
  for (size_t i = 0; i < n; i++) g[i] = 1.0;
  td_optim_step(o, p, g, lr);
  double mean = 0, var = 0;
  for (size_t i = 0; i < n; i++) mean += p[i] / n;
  for (size_t i = 0; i < n; i++) var += (p[i] - mean) * (p[i] - mean) / (n - 1);
  const double v = 2 * lr * T / N;
  if (!(fabs(mean + lr) <= 5 * sqrt(v / n))) fail_msg("mean %.6g, want %.6g", mean, -lr);
  if (!(fabs(var - v) <= 5 * v * sqrt(2.0 / n))) fail_msg("var %.6g, want %.6g", var, v);
  td_optim_destroy(o);
  free(p);
  free(g);
}

static void test_zero_temperature_is_sgd(void **state) {
  (void)state;
  const size_t n = 100;
  td_optim *a = make(0.0, 10, 0.1, 1, n), *b = NULL;
  td_optim_hp hp = td_optim_hp_default();
  hp.weight_decay = 0.1;
  td_err err;
  assert_int_equal(td_optim_create("sgd", &hp, n, &b, &err), 0);
  double pa[100], pb[100], g[100];
  for (size_t i = 0; i < n; i++) {
    pa[i] = pb[i] = 0.01 * (double)i - 0.3;
    g[i] = sin((double)i);
  }
  for (int t = 0; t < 5; t++) {
    td_optim_step(a, pa, g, 0.2);
    td_optim_step(b, pb, g, 0.2);
  }
  assert_memory_equal(pa, pb, sizeof pa);
  td_optim_destroy(a);
  td_optim_destroy(b);
}

static void test_noise_keyed_by_step(void **state) {
  (void)state;
  const size_t n = 16;
  td_optim *a = make(1, 1, 0, 3, n), *b = make(1, 1, 0, 3, n);
  double pa[16] = {0}, pb[16] = {0}, g[16] = {0};
  td_optim_step(a, pa, g, 1.0);
  td_optim_step(b, pb, g, 1.0);
  assert_memory_equal(pa, pb, sizeof pa);
  /* b continues from step 5 (as a fork would): its noise is a's step-5 noise */
  double qa[16] = {0}, qb[16] = {0};
  for (int t = 1; t < 5; t++) td_optim_step(a, pa, g, 1.0);
  td_optim_set_steps(b, 5);
  td_optim_step(a, qa, g, 1.0);
  td_optim_step(b, qb, g, 1.0);
  assert_memory_equal(qa, qb, sizeof qa);
  assert_true(memcmp(qa, pa, sizeof qa) != 0);
  td_err err;
  td_optim_hp hp = td_optim_hp_default(); /* n_data absent: refused */
  td_optim *c = NULL;
  assert_int_equal(td_optim_create("sgld", &hp, n, &c, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.n_data");
  td_optim_destroy(a);
  td_optim_destroy(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_step_moments),
      cmocka_unit_test(test_zero_temperature_is_sgd),
      cmocka_unit_test(test_noise_keyed_by_step),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
