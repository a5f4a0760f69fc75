"""Stage II: grade candidate pairs best / flawed / worst, keep the good ones, k rounds."""
