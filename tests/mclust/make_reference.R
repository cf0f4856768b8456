#!/usr/bin/env Rscript
# Reference data from R's mclust for jaxgmm's parsimonious covariance models.
#
# Usage (from the repository root):
#     Rscript tests/mclust/make_reference.R OUT.json
#
# Writes one JSON object (see tests/mclust_reference.py for the reader):
#   mclust_version, control (the emControl used), n_parameters (rows of
#   nMclustParams / nVarParams), datasets -> {X, z, G, models, fits}.
#   fits[model] = {mstep: {...}, me: {...}, error: null | string}.
#
# Layout: mclust's parameters$mean is (D, G) and is written transposed, as
# (G, D); parameters$variance$sigma is (D, D, G) and is written as a list over
# components of D x D matrices, i.e. (G, D, D).  For d = 1 the variances
# (sigmasq, one value for "E") are written as (G, 1, 1).
#
# Deterministic: synthetic data come from set.seed() and are rounded to 6
# decimals; nothing depends on the time.  Numbers are written with the
# shortest of %.15g / %.16g / %.17g that reads back to the identical double
# (jsonlite's digits = NA stops at 15 significant digits, which is lossy).
#
# Tolerances.  emControl(tol = c(tol1, tol2), itmax = c(itmax1, itmax2)):
#   tol1: outer EM stop: |loglik - loglik_prev| / (1 + |loglik|) <= tol1.
#   tol2: inner iterations of the M-step for the five models without a closed
#         form.  The criterion differs by model (mclust 6.0.0 Fortran):
#           VEI, VEV: largest relative change |old - new| / (1 + |new|) of the
#                     scale / shape parameters, so the parameter error is ~tol2;
#           VEE, EVE, VVE: relative change of the objective value (trace term),
#                     so the parameter error is only ~sqrt(tol2) (tol2 = 1e-13
#                     leaves EVE/VVE M-step sigmas ~1e-6 from the fixed point).
#         mstep() reads only tol[2] and itmax[2]; its default control (NULL)
#         is emControl(), tol2 = sqrt(.Machine$double.eps) ~ 1.5e-8.  Inside
#         me(), the inner loop is warm-started from the previous EM iteration
#         (mstep() starts it from shape = 1, orientation = I each time).
# Experiment over these data sets (itmax 1e5 each), tol = c(t, t):
#   t = 1e-13, 1e-14, 1e-15: every me() and mstep() converges (returnCode 0).
#   t = 3e-16 / 1e-16 / 0: the outer loop still stops (the loglik repeats
#   exactly), but inner loops of VEI/VEE/EVE/VEV start hitting the 1e5 limit
#   (returnCode 2, oscillation at rounding level).
#   Going from 1e-13 to 1e-15 moves me() sigmas by up to 3e-4 on faithful
#   (slow EM); 1e-15 is within ~4e-5 of the t = 0 stopping point.
# So: me() uses ME_TOL = c(1e-15, 1e-15), the tightest that converges for
# every fit.  mstep() for VEI/VEE/EVE/VVE/VEV tries the inner tolerances in
# MSTEP_INNER_TOLS from the tightest and keeps the first that converges
# (recorded as mstep$inner_tol); this makes the one-step references exact to
# rounding (0 usually works for EVE, VEI/VEV need ~1e-15).
ME_TOL <- c(1e-15, 1e-15)
ITMAX <- c(100000L, 100000L)
MSTEP_INNER_TOLS <- c(0, 1e-16, 3e-16, 1e-15, 1e-14, 1e-13)
INNER_MODELS <- c("VEI", "VEE", "EVE", "VVE", "VEV")

suppressPackageStartupMessages(library(mclust))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) stop("usage: Rscript make_reference.R OUT.json")
out_path <- args[[1]]

# The repository root, the JSON writer and the data sets (shared with make_prior_reference.R).
source(file.path(dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1]))),
                 "common.R"))
datasets <- reference_datasets()
CONTROL <- emControl(tol = ME_TOL, itmax = ITMAX)

# ---------------------------------------------------------------------- fits
sigma_of <- function(par, d, G) {
  v <- par$variance
  if (d == 1) {
    s2 <- rep_len(as.numeric(v$sigmasq), G)
    return(lapply(s2, function(s) list(I(s))))
  }
  s <- v$sigma
  lapply(seq_len(G), function(k) rows(s[, , k]))
}
params_of <- function(par, d, G) {
  mu <- if (d == 1) matrix(as.numeric(par$mean), G, 1) else t(as.matrix(par$mean))
  list(pro = I(as.numeric(par$pro)), mean = rows(mu), sigma = sigma_of(par, d, G))
}
fit_one <- function(model, X, z) {
  d <- ncol(X); G <- ncol(z)
  data <- if (d == 1) as.numeric(X) else X
  res <- list(mstep = NULL, me = NULL, error = NULL)
  errs <- character(0)
  run_mstep <- function(ctrl) tryCatch(
    mstep(modelName = model, data = data, z = z, control = ctrl, warn = FALSE),
    error = function(e) e)
  inner_tol <- NULL
  if (model %in% INNER_MODELS) {
    for (t in MSTEP_INNER_TOLS) {
      ms <- run_mstep(emControl(tol = c(ME_TOL[1], t), itmax = ITMAX))
      if (inherits(ms, "error")) break
      inner <- abs(attr(ms, "info")[[1]])
      if (is.null(attr(ms, "WARNING")) && inner < ITMAX[2]) { inner_tol <- t; break }
    }
  } else {
    ms <- run_mstep(CONTROL)
  }
  if (inherits(ms, "error")) {
    errs <- c(errs, paste("mstep:", conditionMessage(ms)))
  } else {
    rc <- attr(ms, "returnCode")
    p <- params_of(ms$parameters, d, G)
    p$returnCode <- as.integer(if (is.null(rc)) 0L else rc)
    info <- attr(ms, "info")
    if (!is.null(info)) {
      p$inner_iterations <- as.integer(abs(info[[1]]))
      p$inner_err <- as.numeric(info[[2]])
    }
    if (!is.null(inner_tol)) p$inner_tol <- inner_tol
    res$mstep <- p
    # mclust 6.0.0's mstepVEV/VEE/EVE/VVE set returnCode 2 even on success
    # (the `ret <- 2` sits outside the "inner iteration limit reached" branch);
    # only a WARNING (or another code) means failure.
    warn_ms <- attr(ms, "WARNING")
    if ((!is.null(rc) && !(rc %in% c(0, 2))) || !is.null(warn_ms))
      errs <- c(errs, paste0("mstep returnCode ", rc, ": ", paste(warn_ms, collapse = " ")))
  }
  fit <- tryCatch(
    me(modelName = model, data = data, z = z, control = CONTROL, warn = FALSE),
    error = function(e) e)
  if (inherits(fit, "error")) {
    errs <- c(errs, paste("me:", conditionMessage(fit)))
  } else {
    rc <- as.integer(attr(fit, "returnCode"))
    info <- attr(fit, "info")
    p <- params_of(fit$parameters, d, G)
    p$loglik <- fit$loglik
    p$n_iter <- as.integer(abs(info[[1]]))  # names differ between models
    p$err <- as.numeric(info[[2]])
    inner <- attr(info, "inner")
    if (!is.null(inner)) p$inner_iterations <- as.integer(abs(inner[[1]]))
    p$z <- rows(fit$z)
    p$returnCode <- rc
    res$me <- p
    if (rc != 0 || !is.null(attr(fit, "WARNING")))
      errs <- c(errs, paste0("me returnCode ", rc, ": ", paste(attr(fit, "WARNING"), collapse = " ")))
  }
  if (length(errs)) res$error <- paste(errs, collapse = "; ")
  res
}

out_sets <- list()
for (name in names(datasets)) {
  ds <- datasets[[name]]
  fits <- list()
  for (m in ds$models) fits[[m]] <- fit_one(m, ds$X, ds$z)
  out_sets[[name]] <- list(X = rows(ds$X), z = rows(ds$z), G = ds$G,
                           models = I(ds$models), fits = fits)
}

# -------------------------------------------------------------- n_parameters
np_rows <- list()
add_np <- function(model, d, G) {
  r <- tryCatch(list(n = nMclustParams(model, d, G), v = nVarParams(model, d, G)),
                error = function(e) NULL)
  if (is.null(r)) return(invisible())
  np_rows[[length(np_rows) + 1]] <<- list(model = model, d = as.integer(d), G = as.integer(G),
                                          n_parameters = as.integer(r$n),
                                          nVarParams = as.integer(r$v))
}
for (d in 2:5) for (G in 1:4) for (m in MODELS) add_np(m, d, G)
for (G in 1:4) for (m in c(MODELS_1D, MODELS)) add_np(m, 1, G)

out <- list(
  mclust_version = as.character(packageVersion("mclust")),
  R_version = paste(R.version$major, R.version$minor, sep = "."),
  control = list(me_tol = I(ME_TOL), itmax = I(ITMAX), eps = CONTROL$eps,
                 mstep_inner_tols = I(MSTEP_INNER_TOLS)),
  n_parameters = np_rows,
  datasets = out_sets
)
writeLines(to_json(out), out_path)
