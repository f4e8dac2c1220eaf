-- wrk script: the latest values and rank of a random influencer (1,000,000 ranked).
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/influencer_analytics/" .. math.random(1000000, 1999999) .. "/latest")
end
