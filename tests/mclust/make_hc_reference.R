#!/usr/bin/env Rscript
# Reference trees from R's mclust for jaxgmm.hc (model-based agglomerative
# hierarchical clustering, mclust's default EM initialisation).
#
# Usage (from the repository root):
#     Rscript tests/mclust/make_hc_reference.R OUT.json
#
# Writes one JSON object (read by tests/test_hc.py):
#   mclust_version, R_version, G (the cuts written: 1..9),
#   datasets -> name -> {
#     X      (N, D) the data,
#     Z_SVD  (N, D') attr(hc(X, use = "SVD"), "data"): the transformed data,
#     hc -> model ("VVV", "EII") -> use ("SVD", "VARS") -> {
#       merges     (N - 1, 2) t(hc(X, modelName = model, use = use)), 1-based
#                  as mclust gives it: row t = the two groups merged at step t,
#                  each named by its smallest row index;
#       partitions (N, 9) hclass(tree, 1:9): column G is the G-group cut,
#                  labels 1..G in order of first row.
#     }
#   }
# Data sets: Old Faithful (jaxgmm/data/faithful.csv, 272 x 2, with 16
# duplicated rows, so exact ties), three_d (300 x 3) and five_d (500 x 5),
# synthetic mixtures drawn after set.seed() and rounded to 6 decimals.
# Deterministic: nothing depends on the time. Numbers are written with the
# shortest of %.15g / %.16g / %.17g that reads back to the identical double
# (as tests/mclust/make_reference.R does).

suppressPackageStartupMessages(library(mclust))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) stop("usage: Rscript make_hc_reference.R OUT.json")
out_path <- args[[1]]

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

# ---------------------------------------------------------------- JSON writer
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
str_esc <- function(s) paste0("\"", gsub("\"", "\\\"", gsub("\\", "\\\\", s, fixed = TRUE), fixed = TRUE), "\"")
to_json <- function(x, indent = 0) {
  pad <- strrep(" ", indent)
  if (is.null(x)) return("null")
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    inner <- vapply(x, to_json, "", indent = indent + 1)
    if (!is.null(names(x))) {
      items <- paste0(str_esc(names(x)), ": ", inner)
      return(paste0("{\n", pad, " ", paste(items, collapse = paste0(",\n", pad, " ")),
                    "\n", pad, "}"))
    }
    return(paste0("[", paste(inner, collapse = ", "), "]"))
  }
  asis <- inherits(x, "AsIs")
  x <- unclass(x)
  attributes(x) <- NULL
  if (is.character(x)) {
    vals <- vapply(x, str_esc, "")
  } else if (is.integer(x)) {
    vals <- as.character(x)
  } else if (is.numeric(x)) {
    vals <- num_str(x)
  } else stop("cannot write ", class(x))
  if (length(x) == 1 && !asis) return(unname(vals))
  paste0("[", paste(vals, collapse = ", "), "]")
}
rows <- function(m, int = FALSE) {  # matrix -> list of row vectors
  m <- as.matrix(m)
  lapply(seq_len(nrow(m)), function(i) {
    r <- m[i, ]
    I(if (int) as.integer(r) else as.numeric(r))
  })
}

# ----------------------------------------------------------------- data sets
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
  X <- round(X, 6)
  X[sample.int(nrow(X)), , drop = FALSE]  # rows in random order
}
random_sigma <- function(d, shape, vol) {
  O <- random_rotation(d)
  s <- vol * O %*% diag(shape / prod(shape)^(1 / d)) %*% t(O)
  (s + t(s)) / 2
}

datasets <- list()
local({
  f <- read.csv(file.path(root, "jaxgmm", "data", "faithful.csv"))
  X <- as.matrix(f[, c("eruptions", "waiting")])
  dimnames(X) <- NULL
  datasets$faithful <<- X
})
local({
  set.seed(20240611)
  sig <- list(random_sigma(3, c(4, 1, 0.25), 0.6), random_sigma(3, c(2.5, 1, 0.4), 1.5),
              random_sigma(3, c(1.5, 1.2, 1 / 1.8), 3.0))
  datasets$three_d <<- draw(c(90L, 135L, 75L), list(c(0, 0, 0), c(5, 1, -1), c(1, 6, 2)), sig)
})
local({
  set.seed(20240612)
  sig <- list(random_sigma(5, c(5, 2, 1, 0.5, 0.1), 0.8), random_sigma(5, c(1, 3, 0.5, 2, 1), 2.0),
              random_sigma(5, c(2, 2, 1, 1, 0.3), 1.2), random_sigma(5, c(6, 1, 1, 1, 1), 1.0))
  means <- list(c(0, 0, 0, 0, 0), c(4, 4, -1, 1, 0), c(-3, 3, 2, 0, 2), c(1, -4, 0, 3, -2))
  datasets$five_d <<- draw(c(150L, 120L, 130L, 100L), means, sig)
})

# ---------------------------------------------------------------------- trees
GS <- 1:9
out_sets <- list()
for (name in names(datasets)) {
  X <- datasets[[name]]
  hcs <- list()
  for (model in c("VVV", "EII")) {
    per_use <- list()
    for (use in c("SVD", "VARS")) {
      tree <- hc(X, modelName = model, use = use)
      per_use[[use]] <- list(merges = rows(t(unclass(tree)[, , drop = FALSE]), int = TRUE),
                             partitions = rows(hclass(tree, GS), int = TRUE))
      if (model == "VVV" && use == "SVD") Z <- attr(tree, "data")
    }
    hcs[[model]] <- per_use
  }
  out_sets[[name]] <- list(X = rows(X), Z_SVD = rows(Z), hc = hcs)
}

out <- list(
  mclust_version = as.character(packageVersion("mclust")),
  R_version = paste(R.version$major, R.version$minor, sep = "."),
  G = I(GS),
  datasets = out_sets
)
writeLines(to_json(out), out_path)
