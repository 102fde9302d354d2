"""Scoring restorations: metrics (PSNR, SSIM, LPIPS), ``evaluate`` over folders, side-by-side
comparisons, the report tables and the pictures (panels, weight maps)."""
