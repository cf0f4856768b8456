# mclust's mclustBIC on Old Faithful from its hierarchical-clustering start, written as JSON.
#   Rscript tests/mclust/make_bic_reference.R OUT.json     (from the repository root)
# Two runs: mclust's default EM control (relative tolerance 1e-5, as Mclust() uses) and a tight one
# (1e-13), whose cells are converged fixed points that jaxgmm's converged fits can equal.
suppressPackageStartupMessages(library(mclust))
out <- commandArgs(trailingOnly = TRUE)[1]
X <- as.matrix(read.csv(file.path("jaxgmm", "data", "faithful.csv")))
runs <- list(default = mclustBIC(X),
             tight = mclustBIC(X, control = emControl(tol = c(1e-13, 1e-13), itmax = c(1e5, 1e5))))
num <- function(v) if (is.na(v)) "null" else sprintf("%.17g", v)
table_json <- function(b) {
  cells <- character(0)
  for (m in colnames(b)) for (g in rownames(b)) cells <- c(cells, sprintf('"%s,%s": %s', m, g, num(b[g, m])))
  paste0("{", paste(cells, collapse = ", "), "}")
}
best <- function(b) names(summary(b))[1]
json <- sprintf('{"mclust_version": "%s", "n": %d, "default": {"bic": %s, "best": "%s"}, "tight": {"bic": %s, "best": "%s"}}\n',
                as.character(packageVersion("mclust")), nrow(X), table_json(runs$default), best(runs$default),
                table_json(runs$tight), best(runs$tight))
writeLines(json, out, sep = "")
