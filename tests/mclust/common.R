# Shared by the mclust reference scripts (source()d by them): the repository root, a lossless JSON
# writer, and the data sets with their starting responsibilities (reference_datasets()). Deterministic
# (set.seed; no clock).
# Needs only base R; the caller has loaded mclust.

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
rows <- function(m, int = FALSE) {  # matrix -> list of row vectors (arrays even if length 1)
  m <- as.matrix(m)
  lapply(seq_len(nrow(m)), function(i) I(if (int) as.integer(m[i, ]) else as.numeric(m[i, ])))
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

# The reference data sets with their starting responsibilities: name -> {X, z, G, models}.
reference_datasets <- function() {
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
  datasets
}
