/* standard_trajectory: a fixed standard-parameterization computation touching forward,
 * backward, the optimizers (sgd+momentum, adam), LayerNorm, and the curvature products
 * (gradient, HVP, JVP): the returned numbers must not change bitwise. */
static void standard_trajectory(double out[6]) {
  td_mlp_cfg c = {.in_dim = 6, .out_dim = 3, .n_hidden = 2, .hidden = {16, 12},
                  .act = TD_ACT_TANH, .init_scale = 1.0};
  double X[20 * 6], Y[20 * 3];
  td_rng r;
  td_rng_init(&r, 7, 11);
  td_rng_fill_normal(&r, X, 120, 1.0);
  td_rng_fill_normal(&r, Y, 60, 1.0);
  for (int variant = 0; variant < 2; variant++) {
    c.norm = variant ? TD_NORM_LAYERNORM : TD_NORM_NONE;
    td_mlp *m = NULL;
    td_mlp_create(&c, &m, NULL);
    td_mlp_init(m, 3);
    td_mlp_ws ws;
    td_mlp_ws_init(&ws, m, 20, NULL);
    td_optim_hp hp = td_optim_hp_default();
    hp.momentum = 0.9;
    td_optim *o = NULL;
    td_optim_create(variant ? "adam" : "sgd", &hp, m->n_params, &o, NULL);
    double dz[60], loss = 0;
    for (int t = 0; t < 25; t++) {
      const double *z = td_mlp_forward(m, &ws, m->params, X, 20);
      loss = 0;
      for (int i = 0; i < 60; i++) {
        loss += 0.5 * (z[i] - Y[i]) * (z[i] - Y[i]) / 20;
        dz[i] = (z[i] - Y[i]) / 20;
      }
      td_mlp_backward(m, &ws, m->params, dz, 20, m->grad, 0);
      td_optim_step(o, m->params, m->grad, variant ? 0.01 : 0.05);
    }
    out[3 * variant] = loss;
    td_curv_ctx cc;
    td_curv_init(&cc, m, 20, NULL);
    td_curv_set_batch(&cc, X, NULL, Y, 20, TD_CURV_MSE, NULL);
    td_curv_set_point(&cc, m->params, NULL);
    const double *g = td_curv_grad(&cc);
    double *v = malloc(m->n_params * sizeof *v), *hv = malloc(m->n_params * sizeof *hv);
    double jv[60];
    for (size_t i = 0; i < m->n_params; i++) v[i] = sin((double)i);
    td_curv_hvp(&cc, v, hv);
    td_curv_jvp(&cc, v, jv);
    double sh = 0, sg = 0;
    for (size_t i = 0; i < m->n_params; i++) {
      sh += hv[i] * (double)(i % 7);
      sg += g[i] * (double)(i % 5);
    }
    for (int i = 0; i < 60; i++) sh += jv[i];
    out[3 * variant + 1] = sg;
    out[3 * variant + 2] = sh;
    free(v);
    free(hv);
    td_curv_deinit(&cc);
    td_optim_destroy(o);
    td_mlp_ws_deinit(&ws);
    td_mlp_destroy(m);
  }
}
