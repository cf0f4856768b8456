#!/usr/bin/env Rscript
# Reference data from R's mclust for jaxgmm's MAP-EM with a conjugate prior (priorControl()).
#
# Usage (from the repository root):
#     Rscript tests/mclust/make_prior_reference.R OUT.json
#
# The data sets and starting responsibilities are those of make_reference.R (common.R). For every
# model mclust gives a prior (all but VEE, EVE, VVE, EVV; "E"/"V" for one feature), writes
#   prior:  defaultPrior(X, G, model) — shrinkage, mean (D), dof, scale ((D, D) or a scalar)
#   first:  me(model, X, z, prior = priorControl(), itmax = 1): the first (MAP) M-step from z
#   me:     me(model, X, z, prior = priorControl()) to convergence: pro, mean, sigma, loglik, n_iter
# and, for EEI, the same two without shrinkage (priorControl(shrinkage = 0)) under "no_shrinkage":
# mclust's meeeip leaves EEI's means unshrunk, which jaxgmm does not follow (jaxgmm/models/priors.py).
# Layout as in make_reference.R: mean (G, D), sigma (G, D, D).
ME_TOL <- c(1e-15, 1e-15)
ITMAX <- c(100000L, 100000L)

suppressPackageStartupMessages(library(mclust))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) stop("usage: Rscript make_prior_reference.R OUT.json")
out_path <- args[[1]]

source(file.path(dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1]))),
                 "common.R"))
datasets <- reference_datasets()

PRIOR_MODELS <- c("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "EEV", "VEV", "VVV")
CONTROL <- emControl(tol = ME_TOL, itmax = ITMAX)
FIRST <- emControl(tol = ME_TOL, itmax = c(1L, ITMAX[2]))

params_of <- function(par, d, G) {
  mu <- if (d == 1) matrix(as.numeric(par$mean), G, 1) else t(as.matrix(par$mean))
  v <- par$variance
  sigma <- if (d == 1) lapply(rep_len(as.numeric(v$sigmasq), G), function(s) list(I(s)))
           else lapply(seq_len(G), function(k) rows(v$sigma[, , k]))
  list(pro = I(as.numeric(par$pro)), mean = rows(mu), sigma = sigma)
}
run_me <- function(model, X, z, prior, control) {
  data <- if (ncol(X) == 1) as.numeric(X) else X
  fit <- me(modelName = model, data = data, z = z, prior = prior, control = control, warn = FALSE)
  p <- params_of(fit$parameters, ncol(X), ncol(z))
  p$loglik <- fit$loglik
  p$n_iter <- as.integer(abs(attr(fit, "info")[[1]]))
  p$returnCode <- as.integer(attr(fit, "returnCode"))
  p
}
prior_of <- function(model, X, G, ...) {
  data <- if (ncol(X) == 1) as.numeric(X) else X
  pp <- defaultPrior(data, G, model, ...)
  scale <- if (is.matrix(pp$scale) && length(pp$scale) > 1) rows(pp$scale) else as.numeric(pp$scale)
  list(shrinkage = pp$shrinkage, mean = I(as.numeric(pp$mean)), dof = pp$dof, scale = scale)
}
fit_one <- function(model, X, z, ...) {
  prior <- priorControl(...)
  list(prior = prior_of(model, X, ncol(z), ...),
       first = run_me(model, X, z, prior, FIRST),
       me = run_me(model, X, z, prior, CONTROL))
}

out_sets <- list()
for (name in names(datasets)) {
  ds <- datasets[[name]]
  models <- if (ncol(ds$X) == 1) MODELS_1D else PRIOR_MODELS
  fits <- list()
  for (m in models) {
    fits[[m]] <- fit_one(m, ds$X, ds$z)
    if (m == "EEI") fits[[m]]$no_shrinkage <- fit_one(m, ds$X, ds$z, shrinkage = 0)
  }
  out_sets[[name]] <- list(X = rows(ds$X), z = rows(ds$z), G = ds$G, models = I(models), fits = fits)
}

out <- list(
  mclust_version = as.character(packageVersion("mclust")),
  R_version = paste(R.version$major, R.version$minor, sep = "."),
  control = list(me_tol = I(ME_TOL), itmax = I(ITMAX)),
  datasets = out_sets
)
writeLines(to_json(out), out_path)
