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

# ---- repository root: from the script's own path, else the working dir ----
script_path <- local({
  a <- commandArgs(trailingOnly = FALSE)
  f <- sub("^--file=", "", a[grepl("^--file=", a)])
  if (length(f)) normalizePath(f[[1]]) else NA_character_
})
find_root <- function() {
  cands <- character(0)
  if (!is.na(script_path)) cands <- c(cands, dirname(dirname(dirname(script_path))))
  cands <- c(cands, getwd())
  for (r in cands) {
    if (file.exists(file.path(r, "jaxgmm", "data", "faithful.csv"))) return(r)
  }
  stop("cannot find the repository root (jaxgmm/data/faithful.csv)")
}
root <- find_root()

MODELS <- c("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE",
            "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV")
MODELS_1D <- c("E", "V")
CONTROL <- emControl(tol = ME_TOL, itmax = ITMAX)

# ---------------------------------------------------------------- JSON writer
# Values: NULL / NA -> null; length-1 atomic -> scalar unless wrapped in I();
# other atomic vectors -> arrays; named lists -> objects; unnamed -> arrays.
num_str <- function(x) {
  out <- character(length(x))
  for (i in seq_along(x)) {
    v <- x[[i]]
    if (is.na(v) || !is.finite(v)) { out[i] <- "null"; next }
    s <- NA_character_
    for (dig in 15:17) {
      s <- sprintf(paste0("%.", dig, "g"), v)
      if (as.numeric(s) == v) break
    }
    out[i] <- s
  }
  out
}
str_esc <- function(s) {
  s <- gsub("\\", "\\\\", s, fixed = TRUE)
  s <- gsub("\"", "\\\"", s, fixed = TRUE)
  s <- gsub("\n", "\\n", s, fixed = TRUE)
  s <- gsub("\r", "\\r", s, fixed = TRUE)
  s <- gsub("\t", "\\t", s, fixed = TRUE)
  s <- gsub("[[:cntrl:]]", " ", s)
  paste0("\"", s, "\"")
}
to_json <- function(x, indent = 0) {
  pad <- strrep(" ", indent)
  if (is.null(x)) return("null")
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    inner <- vapply(x, to_json, "", indent = indent + 1)
    if (!is.null(names(x))) {
      items <- paste0(str_esc(names(x)), ": ", inner)
      # Arrays of numbers stay on one line; objects get one key per line.
      return(paste0("{\n", pad, " ", paste(items, collapse = paste0(",\n", pad, " ")),
                    "\n", pad, "}"))
    }
    return(paste0("[", paste(inner, collapse = ", "), "]"))
  }
  asis <- inherits(x, "AsIs")
  x <- unclass(x)
  attributes(x) <- NULL
  if (is.character(x)) {
    vals <- ifelse(is.na(x), "null", vapply(x, str_esc, ""))
  } else if (is.logical(x)) {
    vals <- ifelse(is.na(x), "null", ifelse(x, "true", "false"))
  } else if (is.integer(x)) {
    vals <- ifelse(is.na(x), "null", as.character(x))
  } else if (is.numeric(x)) {
    vals <- num_str(x)
  } else stop("cannot write ", class(x))
  if (length(x) == 1 && !asis) return(unname(vals))
  paste0("[", paste(vals, collapse = ", "), "]")
}
rows <- function(m) {  # matrix -> list of row vectors (arrays even if length 1)
  m <- as.matrix(m)
  lapply(seq_len(nrow(m)), function(i) I(as.numeric(m[i, ])))
}

# ----------------------------------------------------------------- data sets
smooth_z <- function(labels, G, on = 0.9) {
  off <- (1 - on) / (G - 1)
  z <- matrix(off, length(labels), G)
  z[cbind(seq_along(labels), labels)] <- on
  z
}
random_rotation <- function(d) {
  q <- qr.Q(qr(matrix(rnorm(d * d), d, d)))
  if (det(q) < 0) q[, 1] <- -q[, 1]
  q
}
draw <- function(counts, means, sigmas) {
  X <- NULL
  for (k in seq_along(counts)) {
    d <- length(means[[k]])
    e <- matrix(rnorm(counts[k] * d), counts[k], d)
    X <- rbind(X, sweep(e %*% chol(sigmas[[k]]), 2, means[[k]], "+"))
  }
  list(X = round(X, 6), labels = rep(seq_along(counts), counts))
}

datasets <- list()

# faithful: 272 x 2, G = 3, z from cut() of waiting into 3 equal-width bins.
local({
  f <- read.csv(file.path(root, "jaxgmm", "data", "faithful.csv"))
  X <- as.matrix(f[, c("eruptions", "waiting")])
  dimnames(X) <- NULL
  lab <- as.integer(cut(f$waiting, 3))
  datasets$faithful <<- list(X = X, z = smooth_z(lab, 3), G = 3L, models = MODELS)
})

# three_d: 300 x 3, G = 3, different volumes, shapes and orientations.
local({
  set.seed(20240601)
  shapes <- list(c(4, 1, 0.25), c(2.5, 1, 0.4), c(1.5, 1.2, 1 / 1.8))
  vols <- c(0.6, 1.5, 3.0)
  sigmas <- lapply(1:3, function(k) {
    O <- random_rotation(3)
    vols[k] * O %*% diag(shapes[[k]] / prod(shapes[[k]])^(1 / 3)) %*% t(O)
  })
  sigmas <- lapply(sigmas, function(s) (s + t(s)) / 2)
  means <- list(c(0, 0, 0), c(5, 1, -1), c(1, 6, 2))
  dd <- draw(c(90L, 135L, 75L), means, sigmas)
  datasets$three_d <<- list(X = dd$X, z = smooth_z(dd$labels, 3), G = 3L, models = MODELS)
})

# four_d: 240 x 4, G = 2, common orientation, different shapes and volumes.
local({
  set.seed(20240602)
  O <- random_rotation(4)
  shapes <- list(c(5, 2, 1, 0.1), c(1, 3, 0.5, 2 / 3))
  vols <- c(0.8, 2.5)
  sigmas <- lapply(1:2, function(k) {
    s <- vols[k] * O %*% diag(shapes[[k]] / prod(shapes[[k]])^(1 / 4)) %*% t(O)
    (s + t(s)) / 2
  })
  means <- list(c(0, 0, 0, 0), c(3, 3, -1, 1))
  dd <- draw(c(100L, 140L), means, sigmas)
  datasets$four_d <<- list(X = dd$X, z = smooth_z(dd$labels, 2), G = 2L, models = MODELS)
})

# one_d: 200 x 1, G = 2, models "E" and "V".
local({
  set.seed(20240603)
  dd <- draw(c(120L, 80L), list(0, 4), list(matrix(1), matrix(1.5^2)))
  datasets$one_d <<- list(X = dd$X, z = smooth_z(dd$labels, 2), G = 2L, models = MODELS_1D)
})

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
